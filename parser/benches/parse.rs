//! Parse throughput on a large generated Dockerfile (10,000 instructions of every kind,
//! heredocs and continuations included), reported in bytes of input per second, for
//! the syntax layer alone and for the whole parse to typed instructions.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A Dockerfile of `stages` stages of 20 instructions each (the FROM included).
fn large_dockerfile(stages: usize) -> String {
    let mut text = String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine:3.19\n");
    for i in 0..stages {
        let _ = write!(
            text,
            r#"FROM --platform=$BUILDPLATFORM ${{BASE}} AS stage{i}
ARG VERSION=1.{i} TARGETARCH
ENV PATH=/opt/bin:$PATH LANG=C.UTF-8 HOME=/root
LABEL org.opencontainers.image.title="stage {i}" org.opencontainers.image.version=$VERSION
WORKDIR /src/project-{i}
COPY --from=stage0 --chown=1000:1000 --chmod=0755 --link ./bin/tool-{i} /usr/local/bin/
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/pkg-{i}.tar.gz /tmp/
RUN --mount=type=cache,target=/var/cache/apk,sharing=locked \
    --mount=type=bind,from=stage0,source=/src,target=/in \
    apk add --no-cache curl git make && \
    make -C /in install PREFIX=/usr/local VERSION=$VERSION
RUN <<EOF
set -eux
echo "building {i} for $TARGETARCH"
for f in /usr/local/bin/*; do test -x "$f"; done
EOF
COPY <<-"CONF" /etc/app-{i}.conf
	listen = 0.0.0.0:80{i}
	workers = 4
	CONF
RUN ["/bin/sh", "-c", "echo exec form {i}"]
EXPOSE 80/tcp 443/tcp
VOLUME ["/data/{i}", "/logs"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM
SHELL ["/bin/sh", "-o", "pipefail", "-c"]
ENTRYPOINT ["/usr/local/bin/tool-{i}"]
CMD ["--serve", "--port", "80{i}"]

"#
        );
    }
    text
}

fn bench_parse(c: &mut Criterion) {
    let text = large_dockerfile(500);
    let tree = kiln_parser::syntax::parse_syntax(&text).expect("benchmark input parses");
    assert!(
        tree.nodes.len() >= 10_000,
        "{} instructions",
        tree.nodes.len()
    );
    kiln_parser::parse(&text).expect("benchmark input passes the typed layer");

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(20);
    group.bench_function("syntax", |b| {
        b.iter(|| kiln_parser::syntax::parse_syntax(black_box(&text)))
    });
    group.bench_function("typed", |b| b.iter(|| kiln_parser::parse(black_box(&text))));
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
