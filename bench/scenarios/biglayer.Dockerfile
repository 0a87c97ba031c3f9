# biglayer: one RUN writing 1 GiB of incompressible data.
FROM @REG@/bench/busybox
RUN dd if=/dev/urandom of=/big.bin bs=1M count=1024 2>/dev/null
