#!/bin/sh
# Wait until a Kubernetes Job has finished, completed or failed, for at most SECONDS; print its logs.
# kubectl 1.20's `wait` takes one condition, so `wait --for=condition=complete` sits out its whole timeout
# when the Job has failed: this polls the Job's conditions instead.
#
#   [FAILED=MESSAGE] deploy/k8s/wait_job.sh JOB SECONDS KUBECTL [KUBECTL ARGS...]
#
# Exit 0: the Job completed (its logs printed). 1: it failed (its logs printed, then MESSAGE, or "the Job JOB
# failed", on standard error) or did not finish in time (the last 50 lines of its logs and a line saying so).
set -u
job=$1 seconds=$2
shift 2
start=$(date +%s)
while :; do
  state=$("$@" get job "$job" -o 'jsonpath={.status.conditions[*].type}') || exit 1
  case "$state" in *Complete*|*Failed*) break ;; esac
  if [ $(($(date +%s) - start)) -ge "$seconds" ]; then
    "$@" logs "job/$job" --tail=50 >&2
    echo "the Job $job did not finish in $seconds s" >&2
    exit 1
  fi
  sleep 2
done
"$@" logs "job/$job"
case "$state" in
  *Complete*) exit 0 ;;
  *) echo "${FAILED:-the Job $job failed}" >&2; exit 1 ;;
esac
