// Package tcpdispatch holds the wire contract that the dispatcher, the
// client SDK (package client) and the server kit (package serverkit) share:
// the get-tcp-ip answer, the limits of its request, the server id, the
// status document a tcp-server serves, and the states /v1/servers reports.
// It is the one definition of each; the three sides import it, as Consul's
// agent and clients share its api package.
//
// The package depends on the standard library only, so that applications
// and tcp-servers that import the SDK or the kit do not link the
// dispatcher's dependencies (etcd, echo, logrus, Prometheus); a test keeps
// it so.
//
// Changing anything here changes a public contract: JSON field names, the
// limits and the states are what deployed clients, servers and operators'
// scripts rely on. Add; do not rename or remove.
package tcpdispatch
