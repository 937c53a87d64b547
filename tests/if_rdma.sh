#!/bin/sh
# Runs the given test command only where an RDMA device exists; elsewhere says so and exits 77,
# which ctest reports as a skipped test (make test-rdma runs these tests inside a Soft-RoCE VM).
if [ -z "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
  echo "SKIPPED: no RDMA device on this machine (/sys/class/infiniband is empty); make test-rdma runs these tests in a Soft-RoCE VM"
  exit 77
fi
exec "$@"
