//! `thingcall tsl check|schema|validate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::Value;
use thingcall_tsl::{CompiledModel, CompiledService, ServiceInput, check_str};

use super::Outcome;

#[derive(Subcommand)]
pub(crate) enum TslCommand {
    /// Check a TSL file: prints `ok`, or one `POINTER: message` line per problem (exit 1).
    Check {
        /// The TSL JSON file.
        file: PathBuf,
    },
    /// Print the JSON Schema of a service's inputs (or outputs with --output).
    Schema(SchemaArgs),
    /// Validate Args against a service: prints `ok`, or one `POINTER: message` line per violation (exit 1).
    Validate(ValidateArgs),
    /// Import a TSL file as a product's draft thing model (ImportThingModelTsl).
    Import {
        #[command(flatten)]
        api: super::api::ApiArgs,
        /// The product.
        #[arg(long)]
        product_key: String,
        /// The TSL JSON file.
        file: PathBuf,
    },
    /// Publish the draft thing model as a new version (PublishThingModel).
    Publish {
        #[command(flatten)]
        api: super::api::ApiArgs,
        /// The product.
        #[arg(long)]
        product_key: String,
        /// The version name (generated when absent).
        #[arg(long)]
        model_version: Option<String>,
    },
    /// Print a product's thing model (GetThingModelTsl, or GetThingModelTslPublished with --published).
    Get {
        #[command(flatten)]
        api: super::api::ApiArgs,
        /// The product.
        #[arg(long)]
        product_key: String,
        /// The published model instead of the draft.
        #[arg(long)]
        published: bool,
        /// A published version.
        #[arg(long)]
        model_version: Option<String>,
        /// Only identifiers and data types.
        #[arg(long)]
        simple: bool,
    },
}

#[derive(Args)]
pub(crate) struct SchemaArgs {
    /// The TSL JSON file.
    file: PathBuf,
    /// The service identifier (`block:service` for a custom module).
    #[arg(long)]
    service: String,
    /// Print the schema of the outputs instead of the inputs.
    #[arg(long)]
    output: bool,
}

#[derive(Args)]
pub(crate) struct ValidateArgs {
    /// The TSL JSON file.
    file: PathBuf,
    /// The service identifier (`block:service` for a custom module).
    #[arg(long)]
    service: String,
    /// The Args, a JSON object (a list of property names for `get`).
    #[arg(long)]
    args: String,
}

impl TslCommand {
    pub(crate) fn run(self) -> Outcome {
        match self {
            TslCommand::Check { file } => check_cmd(&file),
            TslCommand::Schema(a) => {
                let service = load_service(&a.file, &a.service)?;
                let schema = if a.output {
                    service.output_schema()
                } else {
                    service.input_schema()
                };
                let text = serde_json::to_string_pretty(schema).map_err(|e| e.to_string())?;
                out!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            TslCommand::Validate(a) => validate_cmd(a),
            TslCommand::Import {
                api,
                product_key,
                file,
            } => super::api::tsl_import(api, &product_key, &file),
            TslCommand::Publish {
                api,
                product_key,
                model_version,
            } => super::api::tsl_publish(api, &product_key, model_version),
            TslCommand::Get {
                api,
                product_key,
                published,
                model_version,
                simple,
            } => super::api::tsl_get(api, &product_key, published, model_version, simple),
        }
    }
}

fn read(file: &Path) -> Result<String, String> {
    std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

fn check_cmd(file: &Path) -> Outcome {
    match check_str(&read(file)?) {
        Ok(_) => {
            out!("ok");
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for p in problems {
                out!("{p}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn load_service(file: &Path, identifier: &str) -> Result<Arc<CompiledService>, String> {
    let model = check_str(&read(file)?).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        format!(
            "{} is not a valid thing model:\n{}",
            file.display(),
            lines.join("\n")
        )
    })?;
    let compiled = CompiledModel::compile(model).map_err(|e| e.to_string())?;
    compiled.service(identifier).cloned().ok_or_else(|| {
        let known: Vec<&str> = compiled.services().map(|(id, _)| id).collect();
        format!(
            "no service {identifier:?} in {} (services: {})",
            file.display(),
            known.join(", ")
        )
    })
}

fn validate_cmd(a: ValidateArgs) -> Outcome {
    let service = load_service(&a.file, &a.service)?;
    let args: Value =
        serde_json::from_str(&a.args).map_err(|e| format!("--args is not JSON: {e}"))?;
    let wants_list = matches!(service.service().input, ServiceInput::PropertyNames(_));
    match (&args, wants_list) {
        (Value::Object(_), false) | (Value::Array(_), true) => {}
        (_, false) => return Err("--args must be a JSON object".to_owned()),
        (_, true) => {
            return Err("--args for `get` must be a JSON list of property identifiers".to_owned());
        }
    }
    let violations = service.validate_args(&args);
    if violations.is_empty() {
        out!("ok");
        return Ok(ExitCode::SUCCESS);
    }
    for v in violations {
        out!("{v}");
    }
    Ok(ExitCode::from(1))
}
