// Package testkit is what the end-to-end (e2e/) and reliability
// (reliability/) tests share: the xlb binary under test, processes run in a
// network namespace with their output kept, `xlb status` and `xlb stats`
// read and waited on with bounded time, and raw IPv4 TCP segments. Every
// wait is bounded; a process's output is printed when its test failed or
// XLB_TEST_VERBOSE is set. It is test code only.
package testkit
