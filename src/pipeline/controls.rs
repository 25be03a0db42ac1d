//! Typed control handles: how one component reaches another's side effects.
//!
//! The risk processor must pause a bot through the Freqtrade receiver's client, but the
//! core knows nothing about trading. A component that offers an action registers a
//! handle under its own id at build time; a component that needs it asks for that type
//! by id. Nothing global, nothing stringly typed beyond the component id.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

type Handle = Arc<dyn Any + Send + Sync>;

#[derive(Clone, Default)]
pub struct Controls {
    handles: Arc<RwLock<HashMap<(TypeId, String), Handle>>>,
}

impl Controls {
    /// Offers `handle` under `owner` (a component id such as `freqtrade/main`).
    pub fn provide<T: Any + Send + Sync>(&self, owner: &str, handle: Arc<T>) {
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((TypeId::of::<T>(), owner.to_owned()), handle);
    }

    /// The handle of type `T` offered by `owner`, if any.
    pub fn get<T: Any + Send + Sync>(&self, owner: &str) -> Option<Arc<T>> {
        let map = self.handles.read().unwrap_or_else(|e| e.into_inner());
        map.get(&(TypeId::of::<T>(), owner.to_owned()))
            .cloned()
            .and_then(|h| h.downcast::<T>().ok())
    }

    /// Every handle of type `T`, with its owner.
    pub fn all<T: Any + Send + Sync>(&self) -> Vec<(String, Arc<T>)> {
        let map = self.handles.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, Arc<T>)> = map
            .iter()
            .filter(|((t, _), _)| *t == TypeId::of::<T>())
            .filter_map(|((_, owner), h)| {
                h.clone().downcast::<T>().ok().map(|h| (owner.clone(), h))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// State shared by every instance of one component id.
///
/// A processor listed in several pipelines is built once per pipeline (a batch must not
/// mix pipelines whose data goes to different exporters), but state that belongs to the
/// component as a whole (per-bot risk counters, per-key enrichment) must not split. Each
/// instance asks for it through [`crate::component::BuildContext::shared`] and gets the
/// same `Arc`.
#[derive(Clone, Default)]
pub struct SharedState {
    values: Arc<Mutex<HashMap<(String, TypeId), Handle>>>,
}

impl SharedState {
    /// The `T` kept under `key`, created by `init` on first use.
    pub fn get_or_init<T: Any + Send + Sync>(&self, key: &str, init: impl FnOnce() -> T) -> Arc<T> {
        let mut map = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let h = map
            .entry((key.to_owned(), TypeId::of::<T>()))
            .or_insert_with(|| Arc::new(init()));
        h.clone()
            .downcast::<T>()
            .expect("entries are keyed by their own type")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_state_is_one_value_per_key_and_type() {
        let s = SharedState::default();
        let a = s.get_or_init("processor risk", || std::sync::atomic::AtomicU64::new(1));
        let b = s.get_or_init("processor risk", || std::sync::atomic::AtomicU64::new(2));
        assert!(Arc::ptr_eq(&a, &b));
        let other = s.get_or_init("processor risk/b", || std::sync::atomic::AtomicU64::new(3));
        assert_eq!(other.load(std::sync::atomic::Ordering::Relaxed), 3);
        let typed = s.get_or_init("processor risk", || String::from("x"));
        assert_eq!(*typed, "x");
    }

    struct Pause(&'static str);
    struct Other;

    #[test]
    fn handles_are_typed_and_owned() {
        let c = Controls::default();
        c.provide("freqtrade/a", Arc::new(Pause("a")));
        c.provide("freqtrade/b", Arc::new(Pause("b")));
        assert_eq!(c.get::<Pause>("freqtrade/a").unwrap().0, "a");
        assert!(c.get::<Other>("freqtrade/a").is_none());
        assert!(c.get::<Pause>("freqtrade/c").is_none());
        assert_eq!(c.all::<Pause>().len(), 2);
    }
}
