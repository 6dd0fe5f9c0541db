//! Engine-neutral SQL statements: text plus bound arguments, with the
//! placeholders left abstract so each [`super::backend::Backend`] renders its
//! own (`?` for SQLite and MySQL, `$n` for PostgreSQL). Shared code builds
//! these and never touches an engine's query types.

/// One bound argument. Only the types the schema uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    Int(i64),
    Int32(i32),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<i32> for Arg {
    fn from(v: i32) -> Self {
        Arg::Int32(v)
    }
}

impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}

impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}

/// A statement under construction. `pieces` always has one more element than
/// `args`: argument `i` goes between `pieces[i]` and `pieces[i + 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stmt {
    pieces: Vec<String>,
    args: Vec<Arg>,
}

impl Stmt {
    /// Starts a statement with fixed text (no placeholders).
    pub(crate) fn new(sql: &str) -> Self {
        Stmt {
            pieces: vec![sql.to_owned()],
            args: Vec::new(),
        }
    }

    /// A whole statement written with `?` for each argument, in order. Our SQL
    /// text never contains a literal `?`; values are always bound.
    pub(crate) fn with(sql: &str, args: impl IntoIterator<Item = Arg>) -> Self {
        let pieces: Vec<String> = sql.split('?').map(str::to_owned).collect();
        let args: Vec<Arg> = args.into_iter().collect();
        debug_assert_eq!(
            pieces.len(),
            args.len() + 1,
            "placeholder count must match argument count in {sql:?}"
        );
        Stmt { pieces, args }
    }

    /// Appends SQL text.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        if let Some(last) = self.pieces.last_mut() {
            last.push_str(sql);
        }
        self
    }

    /// Appends a placeholder bound to `arg`.
    pub(crate) fn bind(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into());
        self.pieces.push(String::new());
        self
    }

    /// Appends `(?, ?, ...)` binding each item.
    pub(crate) fn bind_list<A: Into<Arg>>(
        &mut self,
        items: impl IntoIterator<Item = A>,
    ) -> &mut Self {
        self.push("(");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(item);
        }
        self.push(")")
    }

    /// Appends another statement (text and arguments) in place.
    pub(crate) fn append(&mut self, other: Stmt) -> &mut Self {
        let mut pieces = other.pieces.into_iter();
        if let Some(first) = pieces.next() {
            self.push(&first);
        }
        self.pieces.extend(pieces);
        self.args.extend(other.args);
        self
    }

    /// The text pieces and arguments, interleaved as described on the type.
    pub(crate) fn into_parts(self) -> (Vec<String>, Vec<Arg>) {
        (self.pieces, self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_splits_text_around_each_placeholder() {
        let s = Stmt::with("a = ? AND b = ?", [Arg::from(1i64), Arg::from("x")]);
        let (pieces, args) = s.into_parts();
        assert_eq!(pieces, vec!["a = ", " AND b = ", ""]);
        assert_eq!(args, vec![Arg::Int(1), Arg::Text("x".into())]);
    }

    #[test]
    fn append_keeps_arguments_in_text_order() {
        let mut outer = Stmt::new("SELECT ");
        outer.bind(1i64).push(" WHERE ");
        let mut inner = Stmt::new("x IN ");
        inner.bind_list(["a", "b"]);
        outer.append(inner).push(" AND y = ").bind(true);
        let (pieces, args) = outer.into_parts();
        assert_eq!(pieces.concat(), "SELECT  WHERE x IN (, ) AND y = ");
        assert_eq!(pieces.len(), args.len() + 1);
        assert_eq!(
            args,
            vec![
                Arg::Int(1),
                Arg::Text("a".into()),
                Arg::Text("b".into()),
                Arg::Bool(true)
            ]
        );
    }
}
