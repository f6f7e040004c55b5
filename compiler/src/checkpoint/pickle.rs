//! A safe reader for the pickles inside torch.save files.
//!
//! Pickle is a program for a stack machine, and the standard unpickler will import and call any
//! global it names (`os.system`...). This reader implements only the opcodes a state dict uses
//! (protocol 2, plus the few protocol-4 ones torch may emit), and resolves globals against an
//! allow-list: `collections.OrderedDict`, torch's tensor/parameter rebuild functions and the
//! float storage types. Nothing is ever imported or executed; the rebuild functions become plain
//! [`Value::Tensor`] records that the zip reader resolves to byte ranges.

use std::cell::RefCell;
use std::collections::HashMap;
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

/// Unpickled values. Dicts and lists are shared and mutable because the memo hands out the
/// same object that later SETITEMS/APPENDS fill.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
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

    fn utf8(&self, b: &[u8]) -> Result<String, PickleError> {
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("string is not UTF-8"))
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
            // Later keys replace earlier ones, as in a Python dict.
            if let Value::Str(ks) = &k {
                if let Some(slot) = d.iter_mut().find(|(ek, _)| matches!(ek, Value::Str(e) if e == ks)) {
                    slot.1 = v;
                    continue;
                }
            }
            d.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, target: &Value, items: Vec<Value>) -> Result<(), PickleError> {
        let Value::List(l) = target else {
            return Err(self.bad(format!("APPEND(S) on a {}", target.kind())));
        };
        l.borrow_mut().extend(items);
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
        let Value::Tuple(t) = pid else {
            return Err(self.bad(format!("persistent id must be a tuple, got {}", pid.kind())));
        };
        match t.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), _location, numel]
                if tag == "storage" =>
            {
                Ok(Value::Storage(Rc::new(StorageRef {
                    key: key.clone(),
                    dtype: *dtype,
                    numel: self.int(numel, "storage numel")?,
                })))
            }
            _ => Err(self.bad("persistent id is not ('storage', torch.<Type>Storage, key, location, numel)")),
        }
    }

    fn reduce(&self, func: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Tuple(args) = args else {
            return Err(self.bad(format!("REDUCE arguments must be a tuple, got {}", args.kind())));
        };
        match func {
            Value::Global(Global::OrderedDict) => {
                let d = Rc::new(RefCell::new(Vec::new()));
                match args.as_slice() {
                    [] => {}
                    [Value::List(items)] => {
                        for item in items.borrow().iter() {
                            match item {
                                Value::Tuple(kv) if kv.len() == 2 => {
                                    d.borrow_mut().push((kv[0].clone(), kv[1].clone()))
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
                b'}' => self.stack.push(Value::Dict(Rc::new(RefCell::new(Vec::new())))),
                b']' => self.stack.push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                b')' => self.stack.push(Value::Tuple(Rc::new(Vec::new()))),
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
                    let s = self.utf8(b)?;
                    self.stack.push(Value::Str(s))
                }
                0x8c => {
                    let n = self.u8()?;
                    let b = self.len_prefixed(n.into())?;
                    let s = self.utf8(b)?;
                    self.stack.push(Value::Str(s))
                }
                0x8d => {
                    let n = self.u64()?;
                    let b = self.len_prefixed(n)?;
                    let s = self.utf8(b)?;
                    self.stack.push(Value::Str(s))
                }
                b'U' | b'C' => {
                    let n = self.u8()?;
                    let b = self.len_prefixed(n.into())?;
                    self.stack.push(Value::Bytes(b.to_vec()))
                }
                b'T' | b'B' => {
                    let n = self.u32()?;
                    let b = self.len_prefixed(n.into())?;
                    self.stack.push(Value::Bytes(b.to_vec()))
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
                    self.stack.push(Value::Global(Global::resolve(&module, &name)?))
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
                    self.stack.push(Value::Tuple(Rc::new(items)))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(Rc::new(items)))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = Value::Dict(Rc::new(RefCell::new(Vec::new())));
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
    let m = Machine { data, pos: 0, op_pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() };
    m.run()
}
