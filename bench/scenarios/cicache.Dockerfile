# cicache: a builder stage and a final stage; every RUN sleeps, so a step that misses
# the imported cache shows in the time.
FROM @REG@/bench/busybox AS build
RUN sleep 3 && mkdir /out && seq 1 300000 | sha256sum > /out/sum
RUN dd if=/dev/urandom of=/out/blob bs=1M count=32 2>/dev/null

FROM @REG@/bench/busybox
COPY --from=build /out /out
RUN sleep 2 && ls -l /out > /out/listing
