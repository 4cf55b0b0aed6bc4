// Package deploy holds no code: it is the home of the packaging files
// (../Dockerfile, docker-compose.yml, systemd/, kubernetes/) and of the test
// that parses them and checks them against the real binaries: every flag
// they pass exists in the binary's --help, probe paths and ports match the
// dispatcher's routes and defaults, and the systemd unit passes
// systemd-analyze verify where that tool exists. Docker is not needed: the
// image is never built by the test.
package deploy
