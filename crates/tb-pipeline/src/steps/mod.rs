//! One file per step kind, each an implementation of [`crate::step::Step`].

pub(crate) mod batch;
pub(crate) mod filter;
pub(crate) mod partition;
pub(crate) mod route;
pub(crate) mod transform;

#[cfg(test)]
pub(crate) mod test_step;
