//! Expansion throughput on long words: a literal-heavy word, a substitution-heavy word,
//! and word splitting, reported in bytes of input per second.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_parser::shell::Lex;

fn env() -> BTreeMap<String, String> {
    [
        ("PWD", "/home/user"),
        ("VERSION", "v1.2.3"),
        ("FILE", "archive.tar.gz"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn long_words() -> [(&'static str, String); 2] {
    let literal = "some/plain/path-with.text_and 'quoted words' \"and $PWD\" ".repeat(20_000);
    let substitutions =
        "${VERSION#v}-${FILE%%.*}-${UNSET:-default}-${PWD//\\//_}-$PWD ".repeat(20_000);
    [("literal", literal), ("substitutions", substitutions)]
}

fn bench_expand(c: &mut Criterion) {
    let lex = Lex::new('\\');
    let env = env();
    let mut group = c.benchmark_group("shell");
    group.sample_size(20);
    for (name, input) in long_words() {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(format!("word/{name}"), |b| {
            b.iter(|| lex.process_word(black_box(&input), &env).unwrap())
        });
        group.bench_function(format!("words/{name}"), |b| {
            b.iter(|| lex.process_words(black_box(&input), &env).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_expand);
criterion_main!(benches);
