//! COPY: which fields of a `COPY ... FROM STDIN` stream to encrypt.
//!
//! Text and CSV streams are rewritten field by field by the session; the
//! plan says how to split them (format, delimiter, quote, escape, NULL
//! string, header) and which fields belong to encrypted columns. Binary
//! format and server-side files or programs cannot be rewritten by a proxy
//! and are refused for tables with encrypted columns. `COPY ... TO` reads
//! and passes through here (the read path is handled elsewhere).

use sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Ident, Statement,
};

use super::analyze::Ctx;
use super::error::Refusal;
use super::plan::{CopyFormat, CopyIn};
use super::read::output_leak;
use super::schema::ProtectedColumn;
use super::scope::{name_parts, norm};

/// Options as written, before defaults.
#[derive(Default)]
struct Options {
    format: Option<String>,
    delimiter: Option<char>,
    null: Option<String>,
    quote: Option<char>,
    escape: Option<char>,
    header: bool,
    forced: Vec<Ident>,
    encoding: Option<String>,
    unsupported: bool,
}

/// A column identifier as the catalog stores it: quoted keeps case,
/// unquoted folds to lower case.
fn ident_name(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

fn byte(c: char, what: &str, table: &str) -> Result<u8, Refusal> {
    u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
        Refusal::unsupported(format!("COPY into {table} with a non-ASCII {what} is not supported; use a single ASCII character"))
    })
}

/// The span of a COPY's table name.
fn table_name_span(name: &sqlparser::ast::ObjectName) -> sqlparser::tokenizer::Span {
    sqlparser::ast::Spanned::span(name)
}

impl Ctx<'_> {
    /// Analyses a COPY statement.
    pub fn copy(&mut self, st: &Statement) -> Result<(), Refusal> {
        let Statement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            payload,
        } = st
        else {
            return Ok(());
        };
        let (table_name, columns) = match source {
            CopySource::Table {
                table_name,
                columns,
            } => (table_name, columns),
            CopySource::Query(q) => {
                // COPY (query) TO: the output carries no column origin.
                let out = self.query(q, None)?;
                self.note_read(super::bulk::ReadKind::CopyTo, q, &out);
                return match output_leak(&out) {
                    Some(leak) => Err(Refusal::unsupported(format!(
                        "COPY (SELECT ...) TO over {} is not supported: COPY output does not say which \
                         table a column comes from, so pgveil cannot decrypt or mask it; use \
                         COPY table [(columns)] TO STDOUT or a SELECT",
                        leak.describe()
                    ))),
                    None => Ok(()),
                };
            }
        };
        let Some(parts) = name_parts(table_name) else {
            return Ok(());
        };
        let info = match parts.as_slice() {
            [t] => self.schema.table(None, t),
            [s, t] | [_, s, t] => self.schema.table(Some(s), t),
            _ => None,
        };
        let Some(info) = info else { return Ok(()) };
        if *to {
            // A server file or program would get the stored data.
            if info.is_protected() && !matches!(target, CopyTarget::Stdout) {
                return Err(Refusal::unsupported(format!(
                    "COPY {}.{} TO a server file or program is not supported: it has protected columns \
                     that pgveil must decrypt or mask; use COPY ... TO STDOUT through pgveil",
                    info.schema, info.name
                )));
            }
            let listed: Vec<String> = columns.iter().map(ident_name).collect();
            self.note_copy_table(info, &listed);
            let protected = info
                .columns
                .iter()
                .any(|c| c.protected.is_some() && (listed.is_empty() || listed.contains(&c.name)));
            if !protected {
                return Ok(());
            }
        } else if !info.columns.iter().any(|c| {
            c.protected
                .as_ref()
                .is_some_and(|p| p.protection.encrypts())
        }) {
            return Ok(());
        }
        let table = format!("{}.{}", info.schema, info.name);
        match target {
            CopyTarget::Stdin | CopyTarget::Stdout => {}
            _ => {
                return Err(Refusal::unsupported(format!(
                    "COPY into {table} from a server file or program is not supported: pgveil must encrypt its \
                     encrypted columns; use COPY ... FROM STDIN through pgveil"
                )))
            }
        }
        if payload.as_ref().is_some_and(|p| !p.data.trim().is_empty()) {
            return Err(Refusal::unsupported(format!(
                "COPY into {table} must be sent as a statement of its own, with its data in the COPY stream"
            )));
        }

        let mut o = Options::default();
        for opt in options {
            match opt {
                CopyOption::Format(f) => o.format = Some(norm(f)),
                CopyOption::Delimiter(c) => o.delimiter = Some(*c),
                CopyOption::Null(s) => o.null = Some(s.clone()),
                CopyOption::Header(h) => o.header = *h,
                CopyOption::Quote(c) => o.quote = Some(*c),
                CopyOption::Escape(c) => o.escape = Some(*c),
                CopyOption::ForceNotNull(cols) | CopyOption::ForceNull(cols) => {
                    o.forced.extend(cols.iter().cloned())
                }
                CopyOption::ForceQuote(_) | CopyOption::Freeze(_) => {}
                CopyOption::Encoding(e) => o.encoding = Some(e.clone()),
            }
        }
        for opt in legacy_options {
            match opt {
                CopyLegacyOption::Binary => o.format = Some("binary".into()),
                CopyLegacyOption::Delimiter(c) => o.delimiter = Some(*c),
                CopyLegacyOption::Null(s) => o.null = Some(s.clone()),
                CopyLegacyOption::Header => o.header = true,
                CopyLegacyOption::Csv(csv) => {
                    o.format = Some("csv".into());
                    for c in csv {
                        match c {
                            CopyLegacyCsvOption::Header => o.header = true,
                            CopyLegacyCsvOption::Quote(q) => o.quote = Some(*q),
                            CopyLegacyCsvOption::Escape(e) => o.escape = Some(*e),
                            CopyLegacyCsvOption::ForceNotNull(cols) => {
                                o.forced.extend(cols.iter().cloned())
                            }
                            CopyLegacyCsvOption::ForceQuote(_) => {}
                        }
                    }
                }
                _ => o.unsupported = true,
            }
        }
        if o.unsupported {
            return Err(Refusal::unsupported(format!(
                "COPY into {table} uses an option pgveil does not know; use FORMAT, DELIMITER, NULL, HEADER, QUOTE, ESCAPE"
            )));
        }
        if o.encoding
            .as_deref()
            .is_some_and(|e| !matches!(e.to_ascii_lowercase().as_str(), "utf8" | "utf-8"))
        {
            return Err(Refusal::unsupported(format!(
                "COPY into {table} with an ENCODING other than UTF8 is not supported; send the data as UTF8"
            )));
        }
        let format = match o.format.as_deref() {
            None | Some("text") => CopyFormat::Text,
            Some("csv") => CopyFormat::Csv,
            Some("binary") if *to => {
                return Err(Refusal::unsupported(format!(
                    "COPY {table} TO STDOUT in binary format with protected columns is not supported: \
                     pgveil masks COPY output by role in text and CSV only; use FORMAT text or csv"
                )))
            }
            Some("binary") => {
                return Err(Refusal::unsupported(format!(
                    "COPY in binary format into {table} is not supported: it has encrypted columns; use FORMAT text or csv"
                )))
            }
            Some(_) => return Ok(()), // the server rejects an unknown format
        };

        let full_table = format!("{}.{}", info.schema, info.name);
        let mut sql = None;
        if *to {
            sql = self.legacy_copy_out(info, table_name_span(table_name), columns)?;
        } else if columns.is_empty() {
            self.legacy_positions(&info.hidden, &full_table, "COPY")?;
        }
        let fields: Vec<Option<ProtectedColumn>> = if columns.is_empty() {
            info.columns.iter().map(|c| c.protected.clone()).collect()
        } else {
            columns
                .iter()
                .map(|i| info.column(&norm(i)).and_then(|c| c.protected.clone()))
                .collect()
        };
        // Out, every protected column is shown by role (masks apply to
        // plaintext-stored columns too); in, only encrypted ones change.
        let fields: Vec<Option<ProtectedColumn>> = fields
            .into_iter()
            .map(|f| f.filter(|p| *to || p.protection.encrypts()))
            .collect();
        for f in o.forced.iter().filter(|_| !*to) {
            if let Some(pc) = info
                .column(&norm(f))
                .and_then(|c| c.protected.as_ref())
                .filter(|p| p.protection.encrypts())
            {
                return Err(Refusal::on_column(
                    &pc.full_name,
                    "COPY FORCE_NULL / FORCE_NOT_NULL",
                    "drop the option for this column and write NULL as the NULL string",
                ));
            }
        }
        for pc in fields.iter().flatten() {
            self.touch(pc);
        }
        let csv = format == CopyFormat::Csv;
        let delimiter = byte(
            o.delimiter.unwrap_or(if csv { ',' } else { '\t' }),
            "delimiter",
            &table,
        )?;
        let quote = byte(o.quote.unwrap_or('"'), "quote", &table)?;
        let escape = match o.escape {
            Some(c) => byte(c, "escape", &table)?,
            None => quote,
        };
        let slot = if *to {
            &mut self.copy_out
        } else {
            &mut self.copy
        };
        *slot = Some(CopyIn {
            fields,
            format,
            delimiter,
            null: o
                .null
                .unwrap_or_else(|| if csv { String::new() } else { "\\N".to_owned() }),
            quote,
            escape,
            header: o.header,
            sql,
        });
        Ok(())
    }
}
