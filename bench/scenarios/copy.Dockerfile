# noop / onechange: the whole 20,000-file context copied, then a step that reads it.
FROM @REG@/bench/busybox
COPY . /app
RUN find /app -type f | wc -l > /file-count
