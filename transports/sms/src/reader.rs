//! A bounds-checked cursor over untrusted input: every read names its field.

use crate::error::{Error, Result};

pub(crate) struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.input.len()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.input
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        if n > self.input.len() {
            return Err(Error::Truncated {
                field,
                needed: n,
                available: self.input.len(),
            });
        }
        let (head, tail) = self.input.split_at(n);
        self.input = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8> {
        match self.input.split_first() {
            Some((&b, tail)) => {
                self.input = tail;
                Ok(b)
            }
            None => Err(Error::Truncated {
                field,
                needed: 1,
                available: 0,
            }),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn finish(&self, context: &'static str) -> Result<()> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingOctets {
                context,
                count: self.input.len(),
            })
        }
    }
}
