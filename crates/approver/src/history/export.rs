//! Export of the whole chain, as JSON Lines or CSV, to a stream or atomically to a file.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::History;
use crate::error::{Error, Result};

/// The formats the history exports to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per entry and line.
    Jsonl,
    /// seq, at, item, kind, detail, prev, hash.
    Csv,
}

impl ExportFormat {
    /// The file extension (and the name on the command line): `jsonl` or `csv`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "jsonl" => Ok(Self::Jsonl),
            "csv" => Ok(Self::Csv),
            other => Err(Error::BadExportFormat(other.to_owned())),
        }
    }
}

impl History {
    /// Writes every entry in `format`, oldest first; returns how many.
    pub fn export(&self, format: ExportFormat, out: &mut dyn Write) -> Result<u64> {
        match format {
            ExportFormat::Jsonl => self.export_jsonl(out),
            ExportFormat::Csv => self.export_csv(out),
        }
    }

    /// Writes every entry in `format` to `path`, atomically: into a temporary file beside it,
    /// synced, then renamed into place, so a failed export leaves nothing behind. An existing
    /// file is replaced only when `replace` is set.
    pub fn export_to(&self, format: ExportFormat, path: &Path, replace: bool) -> Result<u64> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        let entries = {
            let mut out = std::io::BufWriter::new(file.as_file_mut());
            let entries = self.export(format, &mut out)?;
            out.flush()?;
            entries
        };
        file.as_file().sync_all()?;
        if replace {
            file.persist(path).map_err(|e| e.error)?;
        } else {
            file.persist_noclobber(path).map_err(|e| e.error)?;
        }
        Ok(entries)
    }

    /// Writes every entry as JSON Lines, oldest first.
    pub fn export_jsonl(&self, out: &mut dyn Write) -> Result<u64> {
        let mut count = 0;
        self.each_entry(|entry| {
            serde_json::to_writer(&mut *out, entry)?;
            out.write_all(b"\n")?;
            count += 1;
            Ok(())
        })?;
        Ok(count)
    }

    /// Writes every entry as CSV (seq, at, item, kind, detail, prev, hash), oldest first.
    pub fn export_csv(&self, out: &mut dyn Write) -> Result<u64> {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(["seq", "at", "item", "kind", "detail", "prev", "hash"])?;
        let mut count = 0;
        self.each_entry(|e| {
            writer.write_record([
                e.seq.to_string(),
                e.at.to_string(),
                e.item.clone(),
                e.kind.as_str().to_owned(),
                e.detail.to_string(),
                e.prev.clone(),
                e.hash.clone(),
            ])?;
            count += 1;
            Ok(())
        })?;
        writer.flush()?;
        Ok(count)
    }
}
