# cold: six steps on the busybox base, every cache empty (base image included).
FROM @REG@/bench/busybox
RUN mkdir -p /app/bin && echo hello > /app/hello.txt
COPY src/ /app/src/
RUN find /app/src -type f | sort | xargs cat | sha256sum > /app/src.sha256
RUN seq 1 200000 | sha256sum > /app/seq.sha256 && dd if=/dev/urandom of=/app/bin/blob bs=1M count=8 2>/dev/null
RUN ls -lR /app > /app/listing.txt
