// Package testproto is what the end-to-end and reliability tests need to
// speak real protocols through xlb: a self-signed certificate for TLS
// workers, the nginx, redis-server and memcached command lines and
// configuration, a web root of demo bodies for nginx, and small
// hand-written RESP and memcached-text codecs that check every byte they
// read. Test helper code only.
package testproto
