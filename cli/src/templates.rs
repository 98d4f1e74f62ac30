//! Templates for the control plane (`volley_control::plane::Templates`): a
//! template given as JSON (the TOML template's keys) is checked, compiled,
//! stored in the spool's content store and put in the engine's template cache.

use std::path::PathBuf;
use std::sync::Arc;

use volley_control::plane::{StoredTemplate, Templates};
use volley_engine::suppress::sending_domain;
use volley_merge::{Template, TemplateSource, TemplateSpec};

/// The content store and the template cache of one spool.
pub struct MergeTemplates {
    content_dir: PathBuf,
    source: Arc<TemplateSource>,
}

impl MergeTemplates {
    /// Stores into `content_dir` and caches in `source`.
    pub fn new(content_dir: PathBuf, source: Arc<TemplateSource>) -> MergeTemplates {
        MergeTemplates {
            content_dir,
            source,
        }
    }
}

/// A template spec from its JSON form; errors name the key.
pub fn spec_from_json(template: &serde_json::Value) -> Result<TemplateSpec, String> {
    let spec: TemplateSpec = serde_path_to_error::deserialize(template).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })?;
    if spec.text.is_none() && spec.html.is_none() && spec.raw.is_none() {
        return Err("no body: set text or html".to_owned());
    }
    Ok(spec)
}

impl Templates for MergeTemplates {
    fn store(
        &self,
        template: &serde_json::Value,
        fields: &[String],
    ) -> Result<StoredTemplate, String> {
        let spec = spec_from_json(template)?;
        let compiled = Template::compile(&spec).map_err(|e| e.to_string())?;
        let mut available: Vec<&str> = fields.iter().map(String::as_str).collect();
        available.push("email");
        compiled
            .check_fields(&available)
            .map_err(|e| format!("the recipient list does not provide every placeholder: {e}"))?;
        let hash = spec
            .store(&self.content_dir)
            .map_err(|e| format!("cannot store it: {e}"))?;
        let domain = sending_domain(compiled.envelope_from());
        let links = compiled.tracked_links().to_vec();
        self.source.insert(hash, Arc::new(compiled));
        Ok(StoredTemplate {
            content_hash: hash,
            sending_domain: domain,
            links,
        })
    }
}
