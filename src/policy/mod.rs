//! Column policies: which columns are protected, how, and at what grade.
//!
//! This is the DBA's interface (`[[columns]]` in the config file). Parsing is
//! lenient on purpose (raw strings and numbers) so that [`check`] can report
//! *every* problem in one pass with its line, instead of stopping at the
//! first like a plain deserializer would. Nothing here looks at values.

pub mod check;
pub mod column;
pub mod live;
pub mod mask;
pub mod role;

pub use check::{check_static, Problem};
pub use column::{ColumnPolicy, Protection, QualifiedName};
pub use mask::MaskSpec;
