//! End to end through a real Postfix (placeholder until written below).
