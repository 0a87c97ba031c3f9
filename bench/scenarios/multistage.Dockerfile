# multistage: four independent stages (2 s of sleep and some work each), a final stage
# copying from all of them.
FROM @REG@/bench/busybox AS a
RUN sleep 2 && mkdir /out && echo a > /out/name && seq 1 300000 | sha256sum > /out/sum && dd if=/dev/urandom of=/out/blob bs=1M count=16 2>/dev/null

FROM @REG@/bench/busybox AS b
RUN sleep 2 && mkdir /out && echo b > /out/name && seq 1 300000 | sha256sum > /out/sum && dd if=/dev/urandom of=/out/blob bs=1M count=16 2>/dev/null

FROM @REG@/bench/busybox AS c
RUN sleep 2 && mkdir /out && echo c > /out/name && seq 1 300000 | sha256sum > /out/sum && dd if=/dev/urandom of=/out/blob bs=1M count=16 2>/dev/null

FROM @REG@/bench/busybox AS d
RUN sleep 2 && mkdir /out && echo d > /out/name && seq 1 300000 | sha256sum > /out/sum && dd if=/dev/urandom of=/out/blob bs=1M count=16 2>/dev/null

FROM @REG@/bench/busybox
COPY --from=a /out /a
COPY --from=b /out /b
COPY --from=c /out /c
COPY --from=d /out /d
RUN cat /a/name /b/name /c/name /d/name > /names
