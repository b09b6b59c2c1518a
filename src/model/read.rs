//! How the typed view is read: one pass over the JSON, keeping the fields
//! the policy reads and skipping everything else without building it.
//!
//! Every reader is lenient. A field of the wrong type reads as absent, the
//! way `Value::as_str` would, never as an error: the API server has already
//! validated what it sends, and for what a manifest or a fuzzer sends the
//! policy decides what an odd shape means. Only malformed JSON fails. Keys
//! that repeat take the last value, as Go's decoder does. Lists keep every
//! element, objects or not, so an element's index is its JSON Patch index;
//! beyond a cap a list only counts, so memory stays bounded.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What a JSON value turned out to be, where the policy cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shape {
    /// The key was not there.
    #[default]
    Absent,
    Null,
    /// The expected container type: an object for structs, an array for lists.
    Present,
    /// Some other type.
    Other,
}

impl Shape {
    pub fn is_present(self) -> bool {
        self == Shape::Present
    }
}

/// A type read leniently from any JSON value.
pub trait Lenient: Sized + Default {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

/// Reads a `T: Lenient` as a map value or list element.
pub struct Seed<T>(PhantomData<T>);

impl<T> Seed<T> {
    pub fn new() -> Self {
        Seed(PhantomData)
    }
}

impl<T> Default for Seed<T> {
    fn default() -> Self {
        Seed::new()
    }
}

impl<'de, T: Lenient> DeserializeSeed<'de> for Seed<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::read(d)
    }
}

/// A map key, borrowed when the JSON allows it.
pub struct Key<'de>(pub Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Consumes a map without keeping anything.
pub fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Consumes a sequence without keeping anything.
pub fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A visitor that turns every JSON type into a value: `scalar` for
/// strings, numbers and booleans, `other` for maps, sequences and null.
macro_rules! any_visitor {
    ($ty:ty, $expect:literal, |$v:ident: Scalar| $scalar:expr) => {{
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = $ty;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str($expect)
            }
            fn visit_bool<E>(self, b: bool) -> Result<$ty, E> {
                let $v = Scalar::Bool(b);
                Ok($scalar)
            }
            fn visit_i64<E>(self, n: i64) -> Result<$ty, E> {
                let $v = Scalar::Int(Some(n));
                Ok($scalar)
            }
            fn visit_u64<E>(self, n: u64) -> Result<$ty, E> {
                let $v = Scalar::Int(i64::try_from(n).ok());
                Ok($scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<$ty, E> {
                let $v = Scalar::Int(None);
                Ok($scalar)
            }
            fn visit_str<E>(self, s: &str) -> Result<$ty, E> {
                let $v = Scalar::Str(Cow::Borrowed(s));
                Ok($scalar)
            }
            fn visit_string<E>(self, s: String) -> Result<$ty, E> {
                let $v = Scalar::Str(Cow::Owned(s));
                Ok($scalar)
            }
            fn visit_unit<E>(self) -> Result<$ty, E> {
                Ok(<$ty>::default())
            }
            fn visit_none<E>(self) -> Result<$ty, E> {
                Ok(<$ty>::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                drain_map(map)?;
                Ok(<$ty>::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<$ty, A::Error> {
                drain_seq(seq)?;
                Ok(<$ty>::default())
            }
        }
        V
    }};
}

/// A scalar as a lenient reader sees it.
pub enum Scalar<'a> {
    Bool(bool),
    /// An integer that fits i64; `None` for floats and larger numbers.
    Int(Option<i64>),
    Str(Cow<'a, str>),
}

impl Lenient for Option<String> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(any_visitor!(
            Option<String>,
            "a string",
            |v: Scalar| match v {
                Scalar::Str(s) => Some(s.into_owned()),
                _ => None,
            }
        ))
    }
}

impl Lenient for Option<bool> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(any_visitor!(
            Option<bool>,
            "a boolean",
            |v: Scalar| match v {
                Scalar::Bool(b) => Some(b),
                _ => None,
            }
        ))
    }
}

impl Lenient for Option<i64> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(any_visitor!(
            Option<i64>,
            "an integer",
            |v: Scalar| match v {
                Scalar::Int(n) => n,
                _ => None,
            }
        ))
    }
}

impl<T: Lenient> Lenient for Box<T> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::read(d).map(Box::new)
    }
}

/// A string that must be one when present: `wrong` says it was another
/// type (the envelope of an AdmissionReview is held to its schema).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked<T> {
    pub value: Option<T>,
    pub wrong: bool,
}

impl Lenient for Checked<String> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Checked<String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, s: &str) -> Result<Checked<String>, E> {
                Ok(Checked {
                    value: Some(s.to_owned()),
                    wrong: false,
                })
            }
            fn visit_string<E>(self, s: String) -> Result<Checked<String>, E> {
                Ok(Checked {
                    value: Some(s),
                    wrong: false,
                })
            }
            fn visit_unit<E>(self) -> Result<Checked<String>, E> {
                Ok(Checked::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Checked<String>, E> {
                Ok(wrong())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Checked<String>, E> {
                Ok(wrong())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Checked<String>, E> {
                Ok(wrong())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Checked<String>, E> {
                Ok(wrong())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Checked<String>, A::Error> {
                drain_map(map)?;
                Ok(wrong())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Checked<String>, A::Error> {
                drain_seq(seq)?;
                Ok(wrong())
            }
        }
        fn wrong() -> Checked<String> {
            Checked {
                value: None,
                wrong: true,
            }
        }
        d.deserialize_any(V)
    }
}

impl Lenient for Checked<bool> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Checked<bool>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Checked<bool>, E> {
                Ok(Checked {
                    value: Some(b),
                    wrong: false,
                })
            }
            fn visit_unit<E>(self) -> Result<Checked<bool>, E> {
                Ok(Checked::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Checked<bool>, E> {
                Ok(wrong())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Checked<bool>, E> {
                Ok(wrong())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Checked<bool>, E> {
                Ok(wrong())
            }
            fn visit_str<E>(self, _: &str) -> Result<Checked<bool>, E> {
                Ok(wrong())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Checked<bool>, A::Error> {
                drain_map(map)?;
                Ok(wrong())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Checked<bool>, A::Error> {
                drain_seq(seq)?;
                Ok(wrong())
            }
        }
        fn wrong() -> Checked<bool> {
            Checked {
                value: None,
                wrong: true,
            }
        }
        d.deserialize_any(V)
    }
}

/// Any value, kept only as its shape (`valueFrom`, `envFrom` elements, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen(pub Shape);

impl Lenient for Seen {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Seen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("anything")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Seen, E> {
                Ok(Seen(Shape::Other))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Seen, E> {
                Ok(Seen(Shape::Other))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Seen, E> {
                Ok(Seen(Shape::Other))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Seen, E> {
                Ok(Seen(Shape::Other))
            }
            fn visit_str<E>(self, _: &str) -> Result<Seen, E> {
                Ok(Seen(Shape::Other))
            }
            fn visit_unit<E>(self) -> Result<Seen, E> {
                Ok(Seen(Shape::Null))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Seen, A::Error> {
                drain_map(map)?;
                Ok(Seen(Shape::Present))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Seen, A::Error> {
                drain_seq(seq)?;
                Ok(Seen(Shape::Other))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON array read element by element; anything else is recorded as its
/// shape with no elements. At most `CAP` elements are kept; `len` counts all.
#[derive(Debug, Clone)]
pub struct List<T, const CAP: usize = { usize::MAX }> {
    pub shape: Shape,
    pub items: Vec<T>,
    pub len: usize,
}

impl<T, const CAP: usize> Default for List<T, CAP> {
    fn default() -> Self {
        List {
            shape: Shape::Absent,
            items: Vec::new(),
            len: 0,
        }
    }
}

impl<T, const CAP: usize> List<T, CAP> {
    /// Every element was kept.
    pub fn complete(&self) -> bool {
        self.items.len() == self.len
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }
}

impl<T: Lenient, const CAP: usize> Lenient for List<T, CAP> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const CAP: usize>(PhantomData<T>);
        impl<'de, T: Lenient, const CAP: usize> Visitor<'de> for V<T, CAP> {
            type Value = List<T, CAP>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T, CAP>, A::Error> {
                let mut list = List {
                    shape: Shape::Present,
                    items: Vec::new(),
                    len: 0,
                };
                // An element is charged before it is read, so the lists
                // inside it see what is left.
                while list.len < CAP && tally::take() {
                    match seq.next_element_seed(Seed::<T>::new())? {
                        Some(item) => list.items.push(item),
                        None => {
                            tally::give_back();
                            return Ok(list);
                        }
                    }
                    list.len += 1;
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    list.len += 1;
                    tally::count();
                }
                Ok(list)
            }
            fn visit_unit<E>(self) -> Result<List<T, CAP>, E> {
                Ok(List {
                    shape: Shape::Null,
                    ..List::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<List<T, CAP>, A::Error> {
                drain_map(map)?;
                Ok(other())
            }
            fn visit_bool<E>(self, _: bool) -> Result<List<T, CAP>, E> {
                Ok(other())
            }
            fn visit_i64<E>(self, _: i64) -> Result<List<T, CAP>, E> {
                Ok(other())
            }
            fn visit_u64<E>(self, _: u64) -> Result<List<T, CAP>, E> {
                Ok(other())
            }
            fn visit_f64<E>(self, _: f64) -> Result<List<T, CAP>, E> {
                Ok(other())
            }
            fn visit_str<E>(self, _: &str) -> Result<List<T, CAP>, E> {
                Ok(other())
            }
        }
        fn other<T, const CAP: usize>() -> List<T, CAP> {
            List {
                shape: Shape::Other,
                ..List::default()
            }
        }
        d.deserialize_any(V::<T, CAP>(PhantomData))
    }
}

/// `T` read as one object, with how many elements all its lists held.
///
/// A list element can cost fifty times its JSON (`{},` is three bytes, a
/// variable's view fifty-six), so one object's lists together keep at most
/// `cap` elements: past it they only count, and the caller denies the
/// object by the count. Memory then stays bounded whatever the body holds.
#[derive(Debug, Clone, Default)]
pub struct Counted<T, const CAP: usize> {
    pub value: T,
    pub list_elements: usize,
}

impl<T: Lenient, const CAP: usize> Lenient for Counted<T, CAP> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let scope = tally::Scope::enter(CAP);
        let value = T::read(d)?;
        Ok(Counted {
            value,
            list_elements: scope.seen(),
        })
    }
}

/// The count of the object being read. Serde passes a reader nothing but
/// its seed, so rather than thread a context through every reader the
/// count lives here for the span of one `Counted` read, which never leaves
/// its thread. Outside such a span lists are bounded by their own caps.
mod tally {
    use super::Cell;

    #[derive(Clone, Copy)]
    struct Tally {
        kept: usize,
        seen: usize,
        cap: usize,
    }

    thread_local! {
        static CURRENT: Cell<Option<Tally>> = const { Cell::new(None) };
    }

    /// Charges one element to be kept, if there is room for it.
    pub fn take() -> bool {
        match CURRENT.get() {
            None => true,
            Some(t) if t.kept < t.cap => {
                CURRENT.set(Some(Tally {
                    kept: t.kept + 1,
                    seen: t.seen + 1,
                    ..t
                }));
                true
            }
            Some(_) => false,
        }
    }

    /// The list had no element left to take.
    pub fn give_back() {
        if let Some(t) = CURRENT.get() {
            CURRENT.set(Some(Tally {
                kept: t.kept - 1,
                seen: t.seen - 1,
                ..t
            }));
        }
    }

    /// An element counted, not kept.
    pub fn count() {
        if let Some(t) = CURRENT.get() {
            CURRENT.set(Some(Tally {
                seen: t.seen + 1,
                ..t
            }));
        }
    }

    /// One object's count; the enclosing one (if any) is restored on drop,
    /// also when the read fails half way.
    pub struct Scope {
        outer: Option<Tally>,
    }

    impl Scope {
        pub fn enter(cap: usize) -> Scope {
            let outer = CURRENT.replace(Some(Tally {
                kept: 0,
                seen: 0,
                cap,
            }));
            Scope { outer }
        }

        pub fn seen(&self) -> usize {
            CURRENT.get().map_or(0, |t| t.seen)
        }
    }

    impl Drop for Scope {
        fn drop(&mut self) {
            CURRENT.set(self.outer);
        }
    }
}

/// A struct read leniently from a JSON object: the fields listed are kept
/// (the last of repeated keys wins), every other key is skipped unread, and
/// a value that is not an object reads as the default with its shape.
macro_rules! view_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $key:literal => $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default)]
        $vis struct $name {
            /// Whether the value was an object at all.
            #[allow(dead_code)]
            pub shape: $crate::model::read::Shape,
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::model::read::Lenient for $name {
            fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use $crate::model::read::{Key, Seed, Shape, drain_seq};
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($name)))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        let mut out = $name { shape: Shape::Present, ..Default::default() };
                        while let Some(key) = map.next_key::<Key<'de>>()? {
                            match key.0.as_ref() {
                                $( $key => out.$field = map.next_value_seed(Seed::<$ty>::new())?, )*
                                _ => { map.next_value::<serde::de::IgnoredAny>()?; }
                            }
                        }
                        Ok(out)
                    }
                    fn visit_unit<E>(self) -> Result<$name, E> {
                        Ok($name { shape: Shape::Null, ..Default::default() })
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<$name, A::Error> {
                        drain_seq(seq)?;
                        Ok($name { shape: Shape::Other, ..Default::default() })
                    }
                    fn visit_bool<E>(self, _: bool) -> Result<$name, E> {
                        Ok($name { shape: Shape::Other, ..Default::default() })
                    }
                    fn visit_i64<E>(self, _: i64) -> Result<$name, E> {
                        Ok($name { shape: Shape::Other, ..Default::default() })
                    }
                    fn visit_u64<E>(self, _: u64) -> Result<$name, E> {
                        Ok($name { shape: Shape::Other, ..Default::default() })
                    }
                    fn visit_f64<E>(self, _: f64) -> Result<$name, E> {
                        Ok($name { shape: Shape::Other, ..Default::default() })
                    }
                    fn visit_str<E>(self, _: &str) -> Result<$name, E> {
                        Ok($name { shape: Shape::Other, ..Default::default() })
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

pub(crate) use view_struct;
