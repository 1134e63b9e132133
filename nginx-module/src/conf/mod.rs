//! The configuration: conf structs and their merging, what each directive
//! stores, the parsing helpers every setter uses. Depends only on `base`.

mod cluster;
mod directives;
mod parse;
mod policy;
mod structs;

pub use cluster::*;
pub use directives::*;
pub use parse::*;
pub use policy::*;
pub use structs::*;
