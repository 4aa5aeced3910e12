//! `validate -f FILE`: the offline check, with the same model and messages
//! as the control plane and the data plane.

use super::Reported;
use crate::cli::Format;
use crate::output;
use anyhow::Result;
use serde_json::json;
use std::path::Path;

/// Checks `file`; every problem goes to stderr (or into the JSON/YAML answer).
pub fn run(file: &Path, format: Format) -> Result<()> {
    let text = super::apply::read(file)?;
    let name = super::apply::display_name(file);
    let errors = isame_proto::Config::from_yaml(&text).err();
    match format {
        Format::Table => match &errors {
            None => output::emit(&format!("{name}: valid\n"))?,
            Some(errors) => {
                let n = errors.len();
                eprintln!("{name}: {n} problem{}", if n == 1 { "" } else { "s" });
                for e in errors.iter() {
                    eprintln!("  {e}");
                }
            }
        },
        f => {
            let report = json!({
                "valid": errors.is_none(),
                "errors": errors.as_ref().map(|e| json!(e)).unwrap_or(json!([])),
            });
            output::emit(&output::data(f, &report)?)?;
        }
    }
    match errors {
        None => Ok(()),
        Some(_) => Err(Reported.into()),
    }
}
