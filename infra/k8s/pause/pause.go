// pause: the pod sandbox ("infra") container's command for the local cluster.
// It sleeps until SIGTERM/SIGINT (then exits 0 at once, so pods stop without
// waiting out a grace period) and reaps any zombie it inherits as PID 1.
// Built statically by infra/k8s/up.sh with the Debian Go toolchain.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	child := make(chan os.Signal, 16)
	signal.Notify(child, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-child:
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
