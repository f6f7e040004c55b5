//! A safe reader for the pickles inside torch.save files.
//!
//! Pickle is a program for a stack machine, and the standard unpickler will import and call any
//! global it names (`os.system`...). This reader implements only the opcodes a state dict uses
//! (protocol 2, plus the few protocol-4 ones torch may emit), and resolves globals against an
//! allow-list: `collections.OrderedDict`, torch's tensor/parameter rebuild functions and the
//! float storage types. Nothing is ever imported or executed; the rebuild functions become plain
//! [`Value::Tensor`] records that the zip reader resolves to byte ranges.
//!
//! Resource use is bounded by the input the way CPython's unpickler bounds it: the machine is
//! iterative and so is dropping what it built (no recursion on nesting depth), a memoised value
//! is shared rather than copied when it is fetched, strings are interned so that a dict finds a
//! key in O(1), and every opcode allocates at most a constant plus the bytes it consumes.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use super::dtype::DType;

#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error(
        "pickle global '{0}' is not allowed (a state dict needs only collections.OrderedDict, \
         torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and torch.*Storage)"
    )]
    DisallowedGlobal(String),
    #[error("pickle data ends early: the opcode at byte {pos} needs more bytes")]
    Truncated { pos: usize },
    #[error("pickle opcode 0x{op:02x} at byte {pos} is not supported (state dicts do not use it)")]
    UnsupportedOpcode { op: u8, pos: usize },
    #[error("malformed pickle at byte {pos}: {what}")]
    Malformed { pos: usize, what: String },
}

/// The globals a state dict may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    /// A typed storage class, e.g. torch.HalfStorage.
    Storage(DType),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Result<Global, PickleError> {
        Ok(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
                Global::RebuildParameter
            }
            ("torch", "FloatStorage") => Global::Storage(DType::F32),
            ("torch", "HalfStorage") => Global::Storage(DType::F16),
            ("torch", "BFloat16Storage") => Global::Storage(DType::BF16),
            _ => return Err(PickleError::DisallowedGlobal(format!("{module}.{name}"))),
        })
    }
}

/// A storage named by a persistent id: `('storage', torch.XStorage, key, location, numel)`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: DType,
    pub numel: usize,
}

/// What `_rebuild_tensor_v2(storage, offset, size, stride, ...)` would build.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: Rc<StorageRef>,
    /// In elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// An unpickled string. Every string of one [`load`] with the same text is the same object, so
/// two keys are equal exactly when they share an address.
/// A thin pointer, so that a [`Value`] is 16 bytes.
#[derive(Debug, Clone)]
pub struct PyStr(Rc<String>);

impl PyStr {
    fn addr(&self) -> usize {
        Rc::as_ptr(&self.0) as usize
    }
}

impl Deref for PyStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for PyStr {
    fn eq(&self, other: &str) -> bool {
        self.0.as_str() == other
    }
}

/// The intern table's entry: a string found by its text.
#[derive(PartialEq, Eq, Hash)]
struct Interned(Rc<String>);

impl std::borrow::Borrow<str> for Interned {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PyStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The items of a tuple or list. Dropping it is iterative: a value nested a million levels
/// deep is freed without a million nested drop calls.
#[derive(Debug, Default)]
pub struct Seq(Vec<Value>);

impl Deref for Seq {
    type Target = Vec<Value>;
    fn deref(&self) -> &Vec<Value> {
        &self.0
    }
}

impl DerefMut for Seq {
    fn deref_mut(&mut self) -> &mut Vec<Value> {
        &mut self.0
    }
}

impl Drop for Seq {
    fn drop(&mut self) {
        drop_flat(std::mem::take(&mut self.0));
    }
}

/// A dict in insertion order (a state dict is an OrderedDict). A later value for a key
/// replaces the earlier one in place, as in Python; string keys are found in O(1).
#[derive(Debug, Default)]
pub struct Dict {
    entries: Vec<(Value, Value)>,
    /// Index in `entries` of each string key, by the interned string's address; built once the
    /// dict outgrows a scan, so that a million small nested dicts stay small (boxed: one word
    /// instead of a map's six in every dict).
    #[allow(clippy::box_collection)]
    by_str: Option<Box<HashMap<usize, usize>>>,
}

/// Up to this many entries a key is found by scanning (pointer compares).
const SCAN: usize = 8;

impl Dict {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, (Value, Value)> {
        self.entries.iter()
    }

    fn insert(&mut self, k: Value, v: Value) {
        if let Value::Str(s) = &k {
            let addr = s.addr();
            let found = match &mut self.by_str {
                Some(index) => match index.entry(addr) {
                    std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(self.entries.len());
                        None
                    }
                },
                None => self.entries.iter().position(|(ek, _)| matches!(ek, Value::Str(e) if e.addr() == addr)),
            };
            if let Some(i) = found {
                self.entries[i].1 = v;
                return;
            }
        }
        reserve_first(&mut self.entries, 1);
        self.entries.push((k, v));
        if self.by_str.is_none() && self.entries.len() > SCAN {
            let index = self
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, (k, _))| match k {
                    Value::Str(s) => Some((s.addr(), i)),
                    _ => None,
                })
                .collect();
            self.by_str = Some(Box::new(index));
        }
    }
}

impl Drop for Dict {
    fn drop(&mut self) {
        let mut flat = Vec::with_capacity(2 * self.entries.len());
        for (k, v) in self.entries.drain(..) {
            flat.push(k);
            flat.push(v);
        }
        drop_flat(flat);
    }
}

/// Gives an empty vector exactly the room for its first items: most containers of a state
/// dict never grow, and a million nested one-item containers should not hold four slots each.
fn reserve_first<T>(v: &mut Vec<T>, n: usize) {
    if v.capacity() == 0 {
        v.reserve_exact(n);
    }
}

/// Drops `pending` and everything only it holds without recursing: a container that no one
/// else shares gives up its items to the work list before it is dropped empty.
fn drop_flat(mut pending: Vec<Value>) {
    while let Some(mut v) = pending.pop() {
        match &mut v {
            Value::Tuple(t) => {
                if let Some(items) = Rc::get_mut(t) {
                    pending.append(&mut items.0);
                }
            }
            Value::List(l) => {
                if let Some(items) = Rc::get_mut(l) {
                    pending.append(&mut items.get_mut().0);
                }
            }
            Value::Dict(d) => {
                if let Some(d) = Rc::get_mut(d) {
                    let d = d.get_mut();
                    d.by_str = None;
                    for (k, v) in d.entries.drain(..) {
                        pending.push(k);
                        pending.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Unpickled values. Dicts and lists are shared and mutable because the memo hands out the
/// same object that later SETITEMS/APPENDS fill; every value is cheap to clone.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(PyStr),
    Bytes(Rc<Vec<u8>>),
    Tuple(Rc<Seq>),
    List(Rc<RefCell<Seq>>),
    Dict(Rc<RefCell<Dict>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Start of the opcode being executed, for error messages.
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    /// Every string made so far, so that equal strings are one object.
    strings: HashSet<Interned>,
}

impl<'a> Machine<'a> {
    fn bad(&self, what: impl Into<String>) -> PickleError {
        PickleError::Malformed { pos: self.op_pos, what: what.into() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or(PickleError::Truncated { pos: self.op_pos })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len_prefixed(&mut self, n: u64) -> Result<&'a [u8], PickleError> {
        let n = usize::try_from(n).map_err(|_| PickleError::Truncated { pos: self.op_pos })?;
        self.take(n)
    }

    fn utf8(&self, b: &'a [u8]) -> Result<&'a str, PickleError> {
        std::str::from_utf8(b).map_err(|_| self.bad("string is not UTF-8"))
    }

    fn intern(&mut self, s: &str) -> PyStr {
        if let Some(i) = self.strings.get(s) {
            return PyStr(i.0.clone());
        }
        let rc = Rc::new(s.to_string());
        self.strings.insert(Interned(rc.clone()));
        PyStr(rc)
    }

    fn push_str(&mut self, b: &'a [u8]) -> Result<(), PickleError> {
        let s = self.utf8(b)?;
        let s = self.intern(s);
        self.stack.push(Value::Str(s));
        Ok(())
    }

    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.data[self.pos..];
        let nl = rest.iter().position(|&c| c == b'\n').ok_or(PickleError::Truncated { pos: self.op_pos })?;
        self.pos += nl + 1;
        Ok(&rest[..nl])
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        // A pop may not reach below the innermost mark: that would mix up MARK-delimited groups.
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.bad("stack underflow"))
    }

    fn top(&mut self) -> Result<&mut Value, PickleError> {
        let pos = self.op_pos;
        self.stack.last_mut().ok_or(PickleError::Malformed { pos, what: "stack underflow".into() })
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let m = self.marks.pop().ok_or_else(|| self.bad("no MARK to pop to"))?;
        if m > self.stack.len() {
            return Err(self.bad("MARK above the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, idx: u64) -> Result<(), PickleError> {
        let v = self.stack.last().cloned().ok_or_else(|| self.bad("memoize with an empty stack"))?;
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> Result<(), PickleError> {
        let v = self.memo.get(&idx).cloned().ok_or_else(|| self.bad(format!("memo {idx} is not set")))?;
        self.stack.push(v);
        Ok(())
    }

    fn set_items(&mut self, target: &Value, items: Vec<Value>) -> Result<(), PickleError> {
        let Value::Dict(d) = target else {
            return Err(self.bad(format!("SETITEM(S) on a {}", target.kind())));
        };
        if !items.len().is_multiple_of(2) {
            return Err(self.bad("SETITEMS with an odd number of items"));
        }
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.insert(k, v);
        }
        Ok(())
    }

    fn append(&mut self, target: &Value, items: Vec<Value>) -> Result<(), PickleError> {
        let Value::List(l) = target else {
            return Err(self.bad(format!("APPEND(S) on a {}", target.kind())));
        };
        let mut l = l.borrow_mut();
        reserve_first(&mut l, items.len());
        l.extend(items);
        Ok(())
    }

    fn int(&self, v: &Value, what: &str) -> Result<usize, PickleError> {
        match v {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            other => Err(self.bad(format!("{what} must be a non-negative int, got {}", other.kind()))),
        }
    }

    fn int_tuple(&self, v: &Value, what: &str) -> Result<Vec<usize>, PickleError> {
        match v {
            Value::Tuple(t) => t.iter().map(|x| self.int(x, what)).collect(),
            other => Err(self.bad(format!("{what} must be a tuple, got {}", other.kind()))),
        }
    }

    fn persistent_load(&self, pid: Value) -> Result<Value, PickleError> {
        let Value::Tuple(t) = &pid else {
            return Err(self.bad(format!("persistent id must be a tuple, got {}", pid.kind())));
        };
        match t.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), _location, numel]
                if tag == "storage" =>
            {
                Ok(Value::Storage(Rc::new(StorageRef {
                    key: key.to_string(),
                    dtype: *dtype,
                    numel: self.int(numel, "storage numel")?,
                })))
            }
            _ => Err(self.bad("persistent id is not ('storage', torch.<Type>Storage, key, location, numel)")),
        }
    }

    fn reduce(&self, func: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Tuple(args) = &args else {
            return Err(self.bad(format!("REDUCE arguments must be a tuple, got {}", args.kind())));
        };
        match &func {
            Value::Global(Global::OrderedDict) => {
                let d = Rc::new(RefCell::new(Dict::default()));
                match args.as_slice() {
                    [] => {}
                    [Value::List(items)] => {
                        for item in items.borrow().iter() {
                            match item {
                                Value::Tuple(kv) if kv.len() == 2 => {
                                    d.borrow_mut().insert(kv[0].clone(), kv[1].clone())
                                }
                                _ => return Err(self.bad("OrderedDict items must be (key, value) pairs")),
                            }
                        }
                    }
                    _ => return Err(self.bad("OrderedDict takes no arguments or a list of pairs")),
                }
                Ok(Value::Dict(d))
            }
            Value::Global(Global::RebuildTensorV2) => match args.as_slice() {
                [Value::Storage(s), offset, size, stride, ..] if args.len() >= 4 && args.len() <= 7 => {
                    let shape = self.int_tuple(size, "tensor size")?;
                    let stride = self.int_tuple(stride, "tensor stride")?;
                    if shape.len() != stride.len() {
                        return Err(self.bad("tensor size and stride differ in length"));
                    }
                    Ok(Value::Tensor(Rc::new(TensorRef {
                        storage: s.clone(),
                        offset: self.int(offset, "storage offset")?,
                        shape,
                        stride,
                    })))
                }
                _ => Err(self.bad("_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)")),
            },
            Value::Global(Global::RebuildParameter) => match args.first() {
                Some(Value::Tensor(t)) => Ok(Value::Tensor(t.clone())),
                _ => Err(self.bad("_rebuild_parameter needs a tensor as its first argument")),
            },
            other => Err(self.bad(format!("REDUCE calls a {} that is not callable here", other.kind()))),
        }
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO: any protocol up to 5 uses the opcodes below for state dicts.
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.bad(format!("pickle protocol {p} is unknown")));
                    }
                }
                0x95 => {
                    // FRAME: a length hint only.
                    self.u64()?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Rc::new(RefCell::new(Dict::default())))),
                b']' => self.stack.push(Value::List(Rc::new(RefCell::new(Seq::default())))),
                b')' => self.stack.push(Value::Tuple(Rc::new(Seq::default()))),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v.into()))
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v.into()))
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(self.bad("integer wider than 64 bits"));
                    }
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= i64::from(byte) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v))
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)))
                }
                b'X' => {
                    let n = self.u32()?;
                    let b = self.len_prefixed(n.into())?;
                    self.push_str(b)?
                }
                0x8c => {
                    let n = self.u8()?;
                    let b = self.len_prefixed(n.into())?;
                    self.push_str(b)?
                }
                0x8d => {
                    let n = self.u64()?;
                    let b = self.len_prefixed(n)?;
                    self.push_str(b)?
                }
                b'U' | b'C' => {
                    let n = self.u8()?;
                    let b = self.len_prefixed(n.into())?;
                    self.stack.push(Value::Bytes(Rc::new(b.to_vec())))
                }
                b'T' | b'B' => {
                    let n = self.u32()?;
                    let b = self.len_prefixed(n.into())?;
                    self.stack.push(Value::Bytes(Rc::new(b.to_vec())))
                }
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(i.into())?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i.into())?
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(i.into())?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i.into())?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let (module, name) = (self.utf8(module)?, self.utf8(name)?);
                    self.stack.push(Value::Global(Global::resolve(module, name)?))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(Global::resolve(&m, &n)?)),
                        _ => return Err(self.bad("STACK_GLOBAL needs two strings")),
                    }
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(Seq(items))))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(Rc::new(Seq(items))))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(Seq(items)))))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = Value::Dict(Rc::new(RefCell::new(Dict::default())));
                    self.set_items(&d, items)?;
                    self.stack.push(d)
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.stack.push(v)
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.stack.push(v)
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?.clone();
                    self.set_items(&target, vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.set_items(&target, items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    let target = self.top()?.clone();
                    self.append(&target, vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.append(&target, items)?
                }
                b'b' => {
                    // BUILD sets attributes; torch uses it for an OrderedDict's `_metadata`
                    // (module versions), which a reader of weights does not need.
                    let _state = self.pop()?;
                    match self.top()? {
                        Value::Dict(_) => {}
                        other => {
                            let k = other.kind();
                            return Err(self.bad(format!("BUILD on a {k}")));
                        }
                    }
                }
                _ => return Err(PickleError::UnsupportedOpcode { op, pos: self.op_pos }),
            }
        }
    }
}

/// Runs the pickle `data` and returns the object it builds. Never imports or calls anything.
pub fn load(data: &[u8]) -> Result<Value, PickleError> {
    let m = Machine {
        data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        strings: HashSet::new(),
    };
    m.run()
}

// The stack holds one Value per pushed item: keep it two words.
const _: () = assert!(std::mem::size_of::<Value>() == 16);
