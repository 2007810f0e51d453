//! Series identity: metric name plus labels sorted by name, hashed to a stable 64-bit id.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;
use serde::ser::SerializeMap;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the series hash. Changing it changes every series id and event id: never do.
pub const SERIES_SEED: u64 = 0x7e11_7a1e_5e12_1e50;

/// A series: metric name and labels sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesKey {
    /// Metric name.
    pub name: Box<str>,
    /// Labels sorted by name, names unique.
    pub labels: Box<[(Box<str>, Box<str>)]>,
}

impl SeriesKey {
    /// Builds a key, sorting the labels.
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Self {
        let mut labels: Vec<(Box<str>, Box<str>)> = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        Self {
            name: name.into(),
            labels: labels.into_boxed_slice(),
        }
    }

    /// The series id (see [`series_id`]).
    pub fn id(&self) -> u64 {
        let mut scratch = Vec::new();
        series_id(
            &self.name,
            self.labels.iter().map(|(k, v)| (&**k, &**v)),
            &mut scratch,
        )
    }

    /// Value of a label, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &*self.labels[i].1)
    }

    /// Heap bytes held by this key.
    pub fn heap_bytes(&self) -> usize {
        self.name.len()
            + self.labels.len() * size_of::<(Box<str>, Box<str>)>()
            + self
                .labels
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

impl fmt::Display for SeriesKey {
    /// Prometheus style: `name{a="1",b="2"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v:?}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// Serialises as `{"name": ..., "labels": {...}}`.
impl Serialize for SeriesKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Labels<'a>(&'a [(Box<str>, Box<str>)]);
        impl Serialize for Labels<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("labels", &Labels(&self.labels))?;
        m.end()
    }
}

/// Stable 64-bit id of a series: xxh3 with [`SERIES_SEED`] over a length-prefixed encoding of
/// the name and the sorted labels (so no choice of characters can make two keys collide by
/// concatenation). `scratch` is reused between calls to avoid allocation.
pub fn series_id<'a>(
    name: &str,
    sorted_labels: impl Iterator<Item = (&'a str, &'a str)>,
    scratch: &mut Vec<u8>,
) -> u64 {
    scratch.clear();
    let mut put = |s: &str| {
        scratch.extend_from_slice(&(s.len() as u32).to_le_bytes());
        scratch.extend_from_slice(s.as_bytes());
    };
    put(name);
    for (k, v) in sorted_labels {
        put(k);
        put(v);
    }
    xxh3_64_with_seed(scratch, SERIES_SEED)
}

/// A hasher for keys that are already well-mixed 64-bit hashes: passes them through.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A hash map keyed by series id.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_and_label_order_independent() {
        let a = SeriesKey::new("lat", &[("model", "m1"), ("region", "eu")]);
        let b = SeriesKey::new("lat", &[("region", "eu"), ("model", "m1")]);
        assert_eq!(a.id(), b.id());
        // Pinned: ids are part of the event format (event ids derive from them).
        assert_eq!(a.id(), 0xe705_7df3_63ba_6689, "{:#x}", a.id());
    }

    #[test]
    fn concatenation_does_not_collide() {
        let a = SeriesKey::new("ab", &[("c", "d")]);
        let b = SeriesKey::new("a", &[("bc", "d")]);
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn display_and_serialise() {
        let k = SeriesKey::new("lat", &[("region", "eu"), ("model", "m1")]);
        assert_eq!(k.to_string(), r#"lat{model="m1",region="eu"}"#);
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            r#"{"name":"lat","labels":{"model":"m1","region":"eu"}}"#
        );
        assert_eq!(k.label("region"), Some("eu"));
        assert_eq!(k.label("zone"), None);
    }
}
