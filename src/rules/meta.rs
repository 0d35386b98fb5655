//! Meta rule expressions: rule names combined with `&&`, `||`, `!`, parentheses, sums and
//! comparisons (`(__A + __B + __C) >= 2`), as SpamAssassin writes them. A name is 1 when
//! that rule (or built-in hit) fired, else 0, and a meta rule's name is its value (so a
//! sum can be named once and compared in several rules); an expression fires when it is
//! not 0.

/// A name in an expression, resolved when the rule set is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ref {
    /// A rule of the set, by index.
    Rule(usize),
    /// A hit of the built-in checks.
    Hit(&'static str),
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number.
    Num(f64),
    /// A rule or hit.
    Name(Ref),
    /// `!e`.
    Not(Box<Expr>),
    /// A binary operation.
    Bin(Op, Box<Expr>, Box<Expr>),
}

/// Binary operators, loosest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `+`
    Add,
    /// `-`
    Sub,
}

impl Expr {
    /// Parse `text`; `resolve` turns a name into a reference (or says why it cannot).
    pub fn parse(
        text: &str,
        resolve: &mut dyn FnMut(&str) -> Result<Ref, String>,
    ) -> Result<Expr, String> {
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens: &tokens,
            pos: 0,
            resolve,
        };
        let e = p.or()?;
        match p.tokens.get(p.pos) {
            None => Ok(e),
            Some(t) => Err(format!("unexpected `{t}` in `{text}`")),
        }
    }

    /// The value, given the value of each name.
    pub fn eval(&self, value: &dyn Fn(Ref) -> f64) -> f64 {
        let b = |x: bool| if x { 1.0 } else { 0.0 };
        let fired = value;
        match self {
            Expr::Num(n) => *n,
            Expr::Name(r) => value(*r),
            Expr::Not(e) => b(e.eval(fired) == 0.0),
            Expr::Bin(Op::Or, l, r) => b(l.eval(fired) != 0.0 || r.eval(fired) != 0.0),
            Expr::Bin(Op::And, l, r) => b(l.eval(fired) != 0.0 && r.eval(fired) != 0.0),
            Expr::Bin(op, l, r) => {
                let (l, r) = (l.eval(fired), r.eval(fired));
                match op {
                    Op::Gt => b(l > r),
                    Op::Ge => b(l >= r),
                    Op::Lt => b(l < r),
                    Op::Le => b(l <= r),
                    Op::Eq => b(l == r),
                    Op::Ne => b(l != r),
                    Op::Add => l + r,
                    _ => l - r,
                }
            }
        }
    }

    /// Every rule this expression reads.
    pub fn rules(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Name(Ref::Rule(i)) => out.push(*i),
            Expr::Not(e) => e.rules(out),
            Expr::Bin(_, l, r) => {
                l.rules(out);
                r.rules(out);
            }
            _ => {}
        }
    }
}

fn lex(text: &str) -> Result<Vec<String>, String> {
    let mut out = vec![];
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let two = b.get(i..i + 2).unwrap_or_default();
        if matches!(two, b"&&" | b"||" | b">=" | b"<=" | b"==" | b"!=") {
            out.push(String::from_utf8_lossy(two).into_owned());
            i += 2;
        } else if b"!()<>+-".contains(&c) {
            out.push((c as char).to_string());
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push(text[start..i].to_string());
        } else {
            return Err(format!("unexpected `{}` in `{text}`", c as char));
        }
    }
    Ok(out)
}

struct Parser<'a, 'r> {
    tokens: &'a [String],
    pos: usize,
    resolve: &'r mut dyn FnMut(&str) -> Result<Ref, String>,
}

impl Parser<'_, '_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn eat(&mut self, t: &str) -> bool {
        let hit = self.peek() == Some(t);
        self.pos += usize::from(hit);
        hit
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut l = self.and()?;
        while self.eat("||") {
            l = Expr::Bin(Op::Or, Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut l = self.cmp()?;
        while self.eat("&&") {
            l = Expr::Bin(Op::And, Box::new(l), Box::new(self.cmp()?));
        }
        Ok(l)
    }

    fn cmp(&mut self) -> Result<Expr, String> {
        let l = self.sum()?;
        let op = match self.peek() {
            Some(">") => Op::Gt,
            Some(">=") => Op::Ge,
            Some("<") => Op::Lt,
            Some("<=") => Op::Le,
            Some("==") => Op::Eq,
            Some("!=") => Op::Ne,
            _ => return Ok(l),
        };
        self.pos += 1;
        Ok(Expr::Bin(op, Box::new(l), Box::new(self.sum()?)))
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut l = self.unary()?;
        loop {
            let op = if self.eat("+") {
                Op::Add
            } else if self.eat("-") {
                Op::Sub
            } else {
                return Ok(l);
            };
            l = Expr::Bin(op, Box::new(l), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        let Some(t) = self.peek().map(str::to_string) else {
            return Err("the expression ends too early".into());
        };
        self.pos += 1;
        match t.as_str() {
            "!" => Ok(Expr::Not(Box::new(self.unary()?))),
            "(" => {
                let e = self.or()?;
                if !self.eat(")") {
                    return Err("a `(` is not closed".into());
                }
                Ok(e)
            }
            _ if t.starts_with(|c: char| c.is_ascii_digit()) => t
                .parse()
                .map(Expr::Num)
                .map_err(|_| format!("`{t}` is not a number")),
            _ if t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') => {
                (self.resolve)(&t).map(Expr::Name)
            }
            _ => Err(format!("unexpected `{t}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Expr, String> {
        let names = ["A", "B", "C"];
        Expr::parse(s, &mut |n| {
            names
                .iter()
                .position(|x| *x == n)
                .map(Ref::Rule)
                .ok_or_else(|| format!("no rule `{n}`"))
        })
    }

    fn eval(s: &str, fired: &[usize]) -> f64 {
        parse(s)
            .unwrap()
            .eval(&|r| f64::from(u8::from(matches!(r, Ref::Rule(i) if fired.contains(&i)))))
    }

    #[test]
    fn precedence_and_sums() {
        assert_eq!(eval("A && B || C", &[2]), 1.0);
        assert_eq!(eval("A && (B || C)", &[2]), 0.0);
        assert_eq!(eval("!A && C", &[2]), 1.0);
        assert_eq!(eval("(A + B + C) >= 2", &[0, 2]), 1.0);
        assert_eq!(eval("A + B + C >= 2", &[0]), 0.0);
        assert_eq!(eval("A + B - C", &[0, 1]), 2.0);
    }

    #[test]
    fn errors_say_what() {
        assert!(parse("A &&").unwrap_err().contains("ends too early"));
        assert!(parse("(A").unwrap_err().contains("not closed"));
        assert!(parse("A B").unwrap_err().contains("unexpected `B`"));
        assert!(parse("A & B").unwrap_err().contains("unexpected"));
        assert!(parse("D").unwrap_err().contains("no rule `D`"));
    }
}
