//! The pickle interpreter of the checkpoint reader: a protocol-2..5 subset restricted to what
//! `torch.save` writes for a state dict (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, `torch.*Storage` persistent ids).
//! Nothing is executed or imported; an unknown global becomes an opaque object. Tensors come out
//! as [`TensorRef`]s (a view into a named storage), never as data.

use std::collections::HashMap;

use tch::Kind;

/// A tensor as the pickle describes it: a view into a storage.
#[derive(Debug, Clone)]
pub struct TensorRef {
    pub storage: String,
    pub kind: Kind,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

/// The values the pickle interpreter handles.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`, booleans, floats and bytes: never needed, kept opaque.
    Scalar,
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    /// `('storage', <kind>, key, location, numel)`, after BINPERSID.
    Storage(String, Kind),
    Tensor(TensorRef),
    /// Anything else (an object built by an unknown global); kept opaque.
    Object,
}

fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        "ComplexFloatStorage" => Kind::ComplexFloat,
        "ComplexDoubleStorage" => Kind::ComplexDouble,
        _ => return None,
    })
}

fn int_list(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) => Some(*i),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// A protocol-2 pickle interpreter restricted to what `torch.save` writes for a state dict.
pub struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Unpickler<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Unpickler {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.pos + n > self.data.len() {
            return Err("truncated pickle".into());
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("truncated pickle line")?;
        self.pos += end + 1;
        String::from_utf8(rest[..end].to_vec()).map_err(|_| "non-UTF-8 pickle line".to_string())
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or("pickle MARK missing")?;
        if m > self.stack.len() {
            return Err("pickle MARK beyond stack".into());
        }
        Ok(self.stack.split_off(m))
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn str_value(&mut self, n: usize) -> Result<Value, String> {
        let b = self.take(n)?;
        Ok(Value::Str(
            String::from_utf8(b.to_vec()).map_err(|_| "non-UTF-8 pickle string")?,
        ))
    }

    /// Runs the pickle to its STOP and returns the object it built.
    pub fn run(mut self) -> Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'N' => self.stack.push(Value::Scalar),
                0x88 => self.stack.push(Value::Scalar),
                0x89 => self.stack.push(Value::Scalar),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v.into()));
                }
                0x8a => {
                    // LONG1
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err("pickle integer too large".into());
                    }
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= i64::from(x) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Value::Scalar);
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.str_value(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.str_value(n)?;
                    self.stack.push(v);
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.str_value(n)?;
                    self.stack.push(v);
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let v = self.str_value(n)?;
                    self.stack.push(v);
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.take(n)?;
                    self.stack.push(Value::Scalar);
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    self.take(n)?;
                    self.stack.push(Value::Scalar);
                }
                b'q' => {
                    let i = self.u8()?;
                    let v = self.top()?.clone();
                    self.memo.insert(i.into(), v);
                }
                b'r' => {
                    let i = self.u32()?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'h' => {
                    let i = self.u8()?;
                    let v = self.memo.get(&i.into()).ok_or("pickle memo miss")?.clone();
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo.get(&i).ok_or("pickle memo miss")?.clone();
                    self.stack.push(v);
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85 => {
                    let a = self.pop()?;
                    self.stack.push(Value::Tuple(vec![a]));
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(Value::Tuple(vec![a, b]));
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(Value::Tuple(vec![a, b, c]));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = pairs(items)?;
                    self.stack.push(Value::Dict(dict));
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        Value::Object => {}
                        _ => return Err("pickle APPEND to a non-list".into()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        Value::Object => {}
                        _ => return Err("pickle APPENDS to a non-list".into()),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        Value::Object => {}
                        _ => return Err("pickle SETITEM on a non-dict".into()),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let new = pairs(items)?;
                    match self.top()? {
                        Value::Dict(d) => d.extend(new),
                        Value::Object => {}
                        _ => return Err("pickle SETITEMS on a non-dict".into()),
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err("pickle STACK_GLOBAL without strings".into()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent_load(pid)?);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    self.stack.push(reduce(func, args)?);
                }
                0x81 => {
                    // NEWOBJ
                    self.pop()?;
                    self.pop()?;
                    self.stack.push(Value::Object);
                }
                b'b' => {
                    // BUILD: the state of an object (e.g. a state dict's `_metadata`); ignored.
                    self.pop()?;
                }
                _ => return Err(format!("unsupported pickle opcode 0x{op:02x}")),
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of dict items in pickle".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn persistent_load(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(_, ty), Value::Str(key), ..] if tag == "storage" => {
            let kind = storage_kind(ty).ok_or_else(|| format!("unsupported storage type {ty}"))?;
            Ok(Value::Storage(key.clone(), kind))
        }
        _ => Err("persistent id is not a ('storage', type, key, ...) tuple".into()),
    }
}

fn reduce(func: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = func else {
        return Ok(Value::Object);
    };
    let args = match args {
        Value::Tuple(a) => a,
        _ => return Ok(Value::Object),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            match args.as_slice() {
                [
                    Value::Storage(key, kind),
                    Value::Int(offset),
                    size,
                    stride,
                    ..,
                ] => {
                    let size = int_list(size).ok_or("tensor size is not a tuple of ints")?;
                    let stride = int_list(stride).ok_or("tensor stride is not a tuple of ints")?;
                    if size.len() != stride.len() {
                        return Err("tensor size and stride differ in length".into());
                    }
                    Ok(Value::Tensor(TensorRef {
                        storage: key.clone(),
                        kind: *kind,
                        offset: *offset,
                        size,
                        stride,
                    }))
                }
                _ => Err("unexpected _rebuild_tensor_v2 arguments".into()),
            }
        }
        ("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("unexpected _rebuild_parameter arguments".into()),
        },
        _ => Ok(Value::Object),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickle_basics() {
        // {"model": OrderedDict()} with a memo round trip, protocol 2.
        let p =
            b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01ccollections\nOrderedDict\nq\x02)Rq\x03s.";
        let v = Unpickler::new(p).run().unwrap();
        let Value::Dict(d) = v else {
            panic!("not a dict")
        };
        assert_eq!(d.len(), 1);
        assert!(matches!(&d[0].0, Value::Str(s) if s == "model"));
        assert!(matches!(&d[0].1, Value::Dict(x) if x.is_empty()));
        assert!(Unpickler::new(b"\x80\x02}").run().is_err());
        assert!(Unpickler::new(b"\x80\x02\xff").run().is_err());
    }

    #[test]
    fn complex_storages_are_known() {
        assert_eq!(
            storage_kind("ComplexFloatStorage"),
            Some(Kind::ComplexFloat)
        );
        assert_eq!(storage_kind("QInt8Storage"), None);
    }
}
