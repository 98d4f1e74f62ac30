//! Lists on the plane: making them, adding members (a JSON array or a CSV
//! upload, bad rows reported and skipped), what a campaign to a list sends to
//! (its subscribed members matching the targeting query, suppressed ones left
//! to the partitioning as for any list), and what an unsubscribe or a
//! confirmed subscribe request does to a list.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use super::submit::{finish_csv, random_id, JsonRecipient};
use super::{Plane, PlaneError};
use crate::recipients::RecipientList;
use crate::store::lists::{Added, List, NewList};
use crate::suppress::normalize;
use crate::targeting::{matches, Filter};

/// Longest list name.
const MAX_NAME: usize = 200;

/// Members read per page while writing a campaign's recipient list.
const PAGE: i64 = 5_000;

/// A row refused when adding members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedMember {
    /// Its line (CSV, the header is line 1) or position (JSON, from 0).
    pub at: u64,
    /// The address as given.
    pub email: String,
    /// Why.
    pub reason: String,
}

/// What adding members did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MembersAdded {
    /// The counts.
    #[serde(flatten)]
    pub added: Added,
    /// Rows refused.
    pub rejected: Vec<RefusedMember>,
}

/// Checks a field name: letters, digits and `_`, starting with a letter or `_`.
fn check_field(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a field name: 1 to 64 letters, digits or _, not starting with a digit"
        ))
    }
}

/// A merge value as a CSV cell.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Plane {
    /// Makes a list for `owner`; `from` (the sender of its confirmation
    /// messages) turns its subscribe form on.
    pub async fn create_list(&self, new: NewList) -> Result<List, PlaneError> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(PlaneError::BadRequest(format!(
                "name: 1 to {MAX_NAME} characters, no control characters"
            )));
        }
        if let Some(from) = &new.from {
            crate::address::check(from)
                .map_err(|why| PlaneError::BadRequest(format!("from: {from:?}: {why}")))?;
        }
        for (i, f) in new.form_fields.iter().enumerate() {
            check_field(f).map_err(|e| PlaneError::BadRequest(format!("form_fields[{i}]: {e}")))?;
            if f == "email" {
                return Err(PlaneError::BadRequest(format!(
                    "form_fields[{i}]: the form always asks for the address; list the other fields"
                )));
            }
        }
        let list = self
            .store
            .add_list(&NewList {
                name: name.to_owned(),
                ..new
            })
            .await?;
        tracing::info!(list = list.id, name = %list.name, "list created");
        Ok(list)
    }

    /// List `id` as `owner` may see it (`None`: any).
    pub async fn list_for(&self, id: i64, owner: Option<i64>) -> Result<List, PlaneError> {
        let missing = || PlaneError::NotFound(format!("there is no list {id}"));
        let list = self.store.list(id).await?.ok_or_else(missing)?;
        match owner {
            Some(o) if list.owner != Some(o) => Err(missing()),
            _ => Ok(list),
        }
    }

    /// Adds `rows` to list `id` (JSON members); bad rows are refused, the
    /// rest added or updated in one transaction.
    pub async fn add_members(
        &self,
        id: i64,
        rows: Vec<JsonRecipient>,
    ) -> Result<MembersAdded, PlaneError> {
        let mut good = Vec::with_capacity(rows.len());
        let mut rejected = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            match member(&row.email, row.fields) {
                Ok(m) => good.push(m),
                Err(reason) => rejected.push(RefusedMember {
                    at: i as u64,
                    email: row.email,
                    reason,
                }),
            }
        }
        let added = self.store.add_members(id, &dedup(good), false).await?;
        Ok(MembersAdded { added, rejected })
    }

    /// Adds the members of a CSV body (an `email` column, the others merge
    /// fields) to list `id`.
    pub async fn add_members_csv(&self, id: i64, body: &[u8]) -> Result<MembersAdded, PlaneError> {
        let parsed = RecipientList::parse(body, std::path::Path::new("the CSV body"))
            .map_err(|e| PlaneError::BadRequest(e.to_string()))?;
        for (i, f) in parsed.fields.iter().enumerate() {
            check_field(f).map_err(|e| PlaneError::BadRequest(format!("column {}: {e}", i + 2)))?;
        }
        let mut rejected: Vec<RefusedMember> = parsed
            .rejected
            .iter()
            .map(|r| RefusedMember {
                at: r.line,
                email: r.email.clone(),
                reason: r.reason.clone(),
            })
            .collect();
        let mut good = Vec::with_capacity(parsed.rows.len());
        for row in parsed.rows {
            let fields: Map<String, Value> = parsed
                .fields
                .iter()
                .zip(&row.values)
                .map(|(name, v)| {
                    (
                        name.clone(),
                        Value::String(String::from_utf8_lossy(v).into_owned()),
                    )
                })
                .collect();
            match member(&row.email, fields) {
                Ok(m) => good.push(m),
                Err(reason) => rejected.push(RefusedMember {
                    at: row.line,
                    email: row.email,
                    reason,
                }),
            }
        }
        let added = self.store.add_members(id, &dedup(good), false).await?;
        Ok(MembersAdded { added, rejected })
    }

    /// Writes the recipient list of a campaign to list `id`: its subscribed
    /// members matching `filter`, at most `limit`, by address; a member whose
    /// `format` field is `text` gets the text part only (`text_only`).
    /// Answers the file (in the uploads directory) and how many it holds.
    pub(crate) async fn list_recipients(
        &self,
        list: &List,
        filter: &Filter,
        limit: Option<u64>,
    ) -> Result<(PathBuf, u64), PlaneError> {
        let dir = self.uploads_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| PlaneError::Internal(format!("cannot make {}: {e}", dir.display())))?;
        let path = dir.join(format!("{}.csv", random_id()?));
        let internal = |e: &dyn std::fmt::Display| {
            PlaneError::Internal(format!("cannot write {}: {e}", path.display()))
        };
        let file = std::fs::File::create(&path).map_err(|e| internal(&e))?;
        let mut out = csv::Writer::from_writer(std::io::BufWriter::new(file));
        let mut header = vec!["email".to_owned()];
        header.extend(list.fields.iter().filter(|f| *f != "text_only").cloned());
        header.push("text_only".to_owned());
        out.write_record(&header).map_err(|e| internal(&e))?;
        let mut after = String::new();
        let mut written = 0u64;
        let limit = limit.unwrap_or(u64::MAX);
        'pages: loop {
            let page = self.store.members(list.id, &after, PAGE, true).await?;
            let Some(last) = page.last() else { break };
            after = last.email.clone();
            for m in &page {
                if written >= limit {
                    break 'pages;
                }
                if !matches(filter, &m.email, &m.fields) {
                    continue;
                }
                let mut record = vec![m.email.clone()];
                for name in &header[1..header.len() - 1] {
                    record.push(m.fields.get(name).map(cell).unwrap_or_default());
                }
                let text_only = m
                    .fields
                    .get("format")
                    .is_some_and(|f| cell(f).eq_ignore_ascii_case("text"));
                record.push(if text_only { "1" } else { "" }.to_owned());
                out.write_record(&record).map_err(|e| internal(&e))?;
                written += 1;
            }
        }
        finish_csv(out, &path)?;
        Ok((path, written))
    }

    /// The recipient of campaign `campaign` unsubscribed: they leave the
    /// campaign's list, if it had one.
    pub(crate) async fn leave_list(&self, campaign: i64, email: &str) -> Result<(), PlaneError> {
        if let Some(list) = self.store.campaign_list(campaign).await? {
            if self
                .store
                .unsubscribe_member(list, &normalize(email))
                .await?
            {
                tracing::info!(list, campaign, recipient = %email, "unsubscribed from the list");
            }
        }
        Ok(())
    }
}

/// A member from an address and its fields, or why not.
fn member(email: &str, fields: Map<String, Value>) -> Result<(String, Map<String, Value>), String> {
    crate::address::check(email.trim())?;
    for (name, v) in &fields {
        if name == "email" {
            return Err("the address goes in email, not in the fields".to_owned());
        }
        check_field(name)?;
        if !matches!(
            v,
            Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null
        ) {
            return Err(format!(
                "field {name}: a merge field is text, a number or true/false"
            ));
        }
    }
    Ok((normalize(email.trim()), fields))
}

/// The last of each address wins.
fn dedup(rows: Vec<(String, Map<String, Value>)>) -> Vec<(String, Map<String, Value>)> {
    let mut out: Vec<(String, Map<String, Value>)> = Vec::with_capacity(rows.len());
    let mut at = std::collections::HashMap::new();
    for (email, fields) in rows {
        match at.get(&email) {
            Some(&i) => out[i] = (email, fields),
            None => {
                at.insert(email.clone(), out.len());
                out.push((email, fields));
            }
        }
    }
    out
}
