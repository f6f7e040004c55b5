//! The pickle reader's resource use is bounded by its input as CPython's unpickler's is: small
//! hostile pickles (1-4 MB) built here nest a million levels, fetch one memoised string a
//! million times, or insert 200k keys, and each is read within a bound on the memory it takes
//! (measured by a counting allocator), without recursing on the depth.

#[path = "common/alloc_meter.rs"]
mod alloc_meter;

use mambac_compiler::checkpoint::pickle::{self, Value};

#[global_allocator]
static METER: alloc_meter::Meter = alloc_meter::Meter;

/// What CPython needs for the same bytes is under 150 MiB.
const BOUND: usize = 150 << 20;

const LEVELS: usize = 1_000_000;

fn p_str(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

/// Loads `data` and drops the result, returning what the load gave (Ok(()) or the error's
/// message) and the bytes the whole took at its peak.
fn load_measured(data: &[u8], check: impl FnOnce(&Value)) -> (Result<(), String>, usize) {
    let (r, peak, _) = alloc_meter::measure(|| match pickle::load(data) {
        Ok(v) => {
            check(&v);
            // Dropping a value nested a million deep must not recurse either.
            drop(v);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    });
    (r, peak)
}

fn depth_of(mut v: Value) -> usize {
    let mut depth = 0;
    loop {
        let next = match &v {
            Value::Tuple(t) => t.first().cloned(),
            Value::List(l) => l.borrow().first().cloned(),
            Value::Dict(d) => d.borrow().iter().next().map(|(_, v)| v.clone()),
            _ => None,
        };
        match next {
            Some(n) => {
                v = n;
                depth += 1;
            }
            None => return depth,
        }
    }
}

#[test]
fn tuples_nested_a_million_deep() {
    // ()  then TUPLE1 a million times: ((((),),),)...
    let mut data = vec![0x80, 2, b')'];
    data.extend(std::iter::repeat_n(0x85u8, LEVELS));
    data.push(b'.');
    let (r, peak) = load_measured(&data, |v| assert_eq!(depth_of(v.clone()), LEVELS));
    assert_eq!(r, Ok(()));
    assert!(peak < BOUND, "{peak} bytes");
}

#[test]
fn lists_nested_a_million_deep() {
    // A million empty lists, then APPEND each into the one below it.
    let mut data = vec![0x80, 2];
    data.extend(std::iter::repeat_n(b']', LEVELS));
    data.extend(std::iter::repeat_n(b'a', LEVELS - 1));
    data.push(b'.');
    let (r, peak) = load_measured(&data, |v| assert_eq!(depth_of(v.clone()), LEVELS - 1));
    assert_eq!(r, Ok(()));
    assert!(peak < BOUND, "{peak} bytes");
}

#[test]
fn dicts_nested_a_million_deep() {
    // d0 'k' d1 'k' d2 ... then SETITEM a million times: {'k': {'k': {...}}}.
    let mut data = vec![0x80, 2, b'}'];
    data.extend(p_str("k"));
    data.extend(b"q\x00");
    for _ in 0..LEVELS {
        data.extend(b"}h\x00");
    }
    data.push(b'}');
    data.extend(std::iter::repeat_n(b's', LEVELS + 1));
    data.push(b'.');
    assert!(data.len() < 4 << 20);
    let (r, peak) = load_measured(&data, |v| assert_eq!(depth_of(v.clone()), LEVELS + 1));
    assert_eq!(r, Ok(()));
    assert!(peak < BOUND, "{peak} bytes");
}

#[test]
fn a_memoised_string_fetched_a_million_times_is_shared() {
    // A 1 MiB string, memoised, then a list of a million fetches of it: copied, it would be
    // a terabyte.
    let big = "x".repeat(1 << 20);
    let mut data = vec![0x80, 2];
    data.extend(p_str(&big));
    data.extend(b"r\x07\x00\x00\x00(");
    for _ in 0..LEVELS {
        data.extend(b"j\x07\x00\x00\x00");
    }
    data.extend(b"l.");
    let (r, peak) = load_measured(&data, |v| {
        let Value::List(l) = v else { panic!("not a list") };
        let l = l.borrow();
        assert_eq!(l.len(), LEVELS);
        let Value::Str(first) = &l[0] else { panic!("not a str") };
        assert_eq!(first.len(), 1 << 20);
        for item in l.iter() {
            let Value::Str(s) = item else { panic!("not a str") };
            assert_eq!(s.as_ptr(), first.as_ptr(), "a fetched string was copied");
        }
    });
    assert_eq!(r, Ok(()));
    assert!(peak < BOUND, "{peak} bytes");
}

#[test]
fn equal_strings_are_one_object() {
    // The same text spelled twice (not memoised) is interned: one allocation.
    let mut data = vec![0x80, 2, b'('];
    data.extend(p_str("backbone.norm_f.weight"));
    data.extend([0x8c, 22]);
    data.extend(b"backbone.norm_f.weight");
    data.extend(b"t.");
    let Value::Tuple(t) = pickle::load(&data).unwrap() else { panic!("not a tuple") };
    let (Value::Str(a), Value::Str(b)) = (&t[0], &t[1]) else { panic!("not strings") };
    assert_eq!(&**a, "backbone.norm_f.weight");
    assert_eq!(a.as_ptr(), b.as_ptr());
}

/// A dict of `n` distinct keys `k0..`, each mapped to its index.
fn dict_pickle(n: usize) -> Vec<u8> {
    let mut data = vec![0x80, 2, b'}', b'('];
    for i in 0..n {
        data.extend(p_str(&format!("k{i}")));
        data.push(b'J');
        data.extend_from_slice(&(i as u32).to_le_bytes());
    }
    data.extend(b"u.");
    data
}

#[test]
fn two_hundred_thousand_keys_insert_in_constant_time_each() {
    let n = 200_000;
    let data = dict_pickle(n);
    let t = std::time::Instant::now();
    let (r, peak) = load_measured(&data, |v| {
        let Value::Dict(d) = v else { panic!("not a dict") };
        let d = d.borrow();
        assert_eq!(d.len(), n);
        // Insertion order is kept.
        for (i, (k, v)) in d.iter().enumerate() {
            assert!(matches!((k, v), (Value::Str(k), Value::Int(x)) if **k == *format!("k{i}") && *x == i as i64));
        }
    });
    assert_eq!(r, Ok(()));
    assert!(peak < BOUND, "{peak} bytes");
    // A linear search per key takes minutes here; a hashed insert well under a second. The
    // bound is loose so that a slow machine does not fail it.
    assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
}

#[test]
fn a_repeated_key_replaces_its_value_in_place() {
    // {'a': 1, 'b': 2, 'a': 3} through SETITEMS, then 'b' again through SETITEM.
    let mut data = vec![0x80, 2, b'}', b'('];
    data.extend(p_str("a"));
    data.extend(b"K\x01");
    data.extend(p_str("b"));
    data.extend(b"K\x02");
    data.extend(p_str("a"));
    data.extend(b"K\x03u");
    data.extend(p_str("b"));
    data.extend(b"K\x04s.");
    let Value::Dict(d) = pickle::load(&data).unwrap() else { panic!("not a dict") };
    let got: Vec<(String, i64)> = d
        .borrow()
        .iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Int(v)) => (k.to_string(), *v),
            _ => panic!("unexpected entry"),
        })
        .collect();
    assert_eq!(got, vec![("a".to_string(), 3), ("b".to_string(), 4)]);
}

#[test]
fn ordered_dict_of_many_pairs() {
    // OrderedDict([(k, v), ...]) with 100k pairs and a repeated key.
    let n = 100_000;
    let mut data = b"\x80\x02ccollections\nOrderedDict\n(]".to_vec();
    for i in 0..n {
        data.extend(p_str(&format!("k{}", i % (n - 1))));
        data.extend(b"K\x05\x86a");
    }
    data.extend(b"tR.");
    let (r, _) = load_measured(&data, |v| {
        let Value::Dict(d) = v else { panic!("not a dict") };
        assert_eq!(d.borrow().len(), n - 1);
    });
    assert_eq!(r, Ok(()));
}

#[test]
fn a_stack_of_four_million_values_stays_within_bound() {
    // 4 MB of NONE: the worst case of "one value per input byte" that a flat pickle gives.
    let mut data = vec![0x80, 2];
    data.extend(std::iter::repeat_n(b'N', 4 << 20));
    data.push(b'.');
    let (r, peak) = load_measured(&data, |v| assert!(matches!(v, Value::None)));
    assert_eq!(r, Ok(()));
    assert!(peak < BOUND, "{peak} bytes");
}

#[test]
fn a_self_referencing_list_is_read_and_dropped() {
    // l = []; l.append(l): a cycle, which Rc leaks (bounded by the input) rather than loops on.
    let data = b"\x80\x02]q\x00h\x00a.";
    let (r, _) = load_measured(data, |v| {
        let Value::List(l) = v else { panic!("not a list") };
        assert_eq!(l.borrow().len(), 1);
    });
    assert_eq!(r, Ok(()));
}
