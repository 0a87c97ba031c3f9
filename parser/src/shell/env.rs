//! Where variable values come from.
//!
//! The expander only ever asks "is this name set, and to what?", so the environment is
//! a one-method trait rather than a concrete map: the solver keeps its stage state in
//! whatever shape suits it, tests pass literal pair lists, and nothing is copied into a
//! map per word. Names compare exactly (kiln builds Linux images; BuildKit folds case
//! only on Windows).

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

/// A set of variables the expander can look names up in.
pub trait Env {
    /// The value of `name`, or `None` when it is unset. A variable set to the empty
    /// string is `Some("")`: `${v-w}` and `${v:-w}` tell the two apart.
    fn get(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

/// `KEY=value` entries as in a process environment; an entry without `=` sets the key to
/// the empty string, and of repeated keys the last one wins.
impl Env for [String] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().rev().find_map(|entry| entry_value(entry, name))
    }
}

/// `KEY=value` entries, as for `[String]`.
impl Env for [&str] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().rev().find_map(|entry| entry_value(entry, name))
    }
}

/// `(key, value)` pairs; of repeated keys the last one wins.
impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// `(key, value)` pairs; of repeated keys the last one wins.
impl Env for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| *value)
    }
}

impl<T> Env for Vec<T>
where
    [T]: Env,
{
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

impl<T, const N: usize> Env for [T; N]
where
    [T]: Env,
{
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

/// The value of a `KEY=value` entry if its key is `name`.
fn entry_value<'a>(entry: &'a str, name: &str) -> Option<&'a str> {
    match entry.split_once('=') {
        Some((key, value)) => (key == name).then_some(value),
        None => (entry == name).then_some(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_lists_agree() {
        let hash: HashMap<String, String> = [("A".into(), "1".into()), ("E".into(), "".into())]
            .into_iter()
            .collect();
        let tree: BTreeMap<String, String> = hash.clone().into_iter().collect();
        let entries = ["A=0", "A=1", "E"];
        let owned: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        let pairs = [("A", "0"), ("A", "1"), ("E", "")];
        let owned_pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let envs: [&dyn Env; 6] = [&hash, &tree, &entries, &owned, &pairs, &owned_pairs];
        for env in envs {
            assert_eq!(env.get("A"), Some("1"));
            assert_eq!(env.get("E"), Some(""));
            assert_eq!(env.get("a"), None);
            assert_eq!(env.get("A=1"), None);
        }
    }
}
