//! DAG files (format version 1, DESIGN §3): reading, validating, and the validated `Dag`.

mod decode;
mod load;
pub(crate) mod model;
pub mod yaml;

pub use decode::{
    DAG_KEYS, Diagnostic, HANDLER_KEYS, LoadOptions, PARAM_KEYS, SCHEDULE_KEYS, TASK_KEYS, decode,
};
pub use load::{FileError, FolderLoad, LoadedDag, dag_files, load_file, load_paths};
pub use model::{Command, Dag, Handler, Param, ParamType, Task, defaults};

/// The JSON Schema of the DAG file format, for editors (`updraft dags schema`). A test checks
/// it names exactly the keys the decoder accepts.
pub const JSON_SCHEMA: &str = include_str!("schema.json");
