//! The `file` directory source: a CSV or JSON export (HR system, Entra ID export, Excel), read
//! with the same importer as `import-directory`. `[directory] import = "people.csv"` is the
//! shorthand for one such source. The file is read again when its modification time or size
//! changes, so replacing it applies the differences live.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Deserialize;

use presence_actors::directory::{import, NumberPlan};

use super::{Entry, Pass, PassKind, Record, SourceError};

/// `[[directory.sources]] type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Name of the source (`file` when not given).
    #[serde(default = "default_name")]
    pub name: String,
    /// The CSV or JSON file (JSON by the `.json` extension).
    pub path: PathBuf,
    /// How often the file is checked for a change, in seconds.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
}

fn default_name() -> String {
    "file".into()
}

fn default_interval() -> u64 {
    60
}

impl FileConfig {
    /// A file source reading `path` (the `[directory] import` shorthand).
    pub fn new(path: PathBuf) -> FileConfig {
        FileConfig { name: default_name(), path, interval_secs: default_interval() }
    }

    /// Checks the settings: the interval's range (the file may appear later).
    pub fn validate(&self) -> Result<(), SourceError> {
        crate::common::defaults::check_range("interval_secs", self.interval_secs, 1..=86_400).map_err(SourceError::Config)
    }
}

/// A file source: remembers what it last read, so an unchanged file costs one `stat`.
#[derive(Debug)]
pub struct FileSource {
    config: FileConfig,
    seen: Option<(SystemTime, u64)>,
}

impl FileSource {
    /// A source for `config`.
    pub fn new(config: &FileConfig) -> FileSource {
        FileSource { config: config.clone(), seen: None }
    }

    /// Reads the file. An incremental pass of an unchanged file returns no entries and kind
    /// `Incremental`; otherwise the whole file is a full pass (key = the person's id).
    pub async fn pass(&mut self, want: PassKind, _cursor: Option<&str>) -> Result<Pass, SourceError> {
        let path = self.config.path.clone();
        let meta = std::fs::metadata(&path).map_err(|e| SourceError::Connect(format!("{}: {e}", path.display())))?;
        let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
        if want == PassKind::Incremental && self.seen == Some(stamp) {
            return Ok(Pass { kind: PassKind::Incremental, entries: Vec::new(), removed: Vec::new(), cursor: None });
        }
        let people = read(&path)?;
        self.seen = Some(stamp);
        let entries = people.iter().map(|p| Entry { key: p.id.clone(), record: Record::from(p) }).collect();
        Ok(Pass { kind: PassKind::Full, entries, removed: Vec::new(), cursor: None })
    }
}

/// Reads a CSV or JSON directory file. The numbers are normalised again by the hub with its
/// own number plan; here only the rows are validated.
fn read(path: &std::path::Path) -> Result<Vec<presence_actors::directory::Person>, SourceError> {
    let f = std::fs::File::open(path).map_err(|e| SourceError::Connect(format!("{}: {e}", path.display())))?;
    let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let plan = NumberPlan::default();
    let r = if json { import::from_json(f, &plan) } else { import::from_csv(f, &plan) };
    r.map_err(|e| SourceError::Protocol(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn reads_again_only_when_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("presence-file-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("people.csv");
        std::fs::write(&path, "id,name,email\nanna,Anna A,anna@example.se\n").unwrap();
        let mut s = FileSource::new(&FileConfig::new(path.clone()));
        let p = s.pass(PassKind::Incremental, None).await.unwrap();
        assert_eq!(p.kind, PassKind::Full);
        assert_eq!(&*p.entries[0].key, "anna");
        assert_eq!(p.entries[0].record.email.as_deref(), Some("anna@example.se"));
        let again = s.pass(PassKind::Incremental, None).await.unwrap();
        assert_eq!((again.kind, again.entries.len()), (PassKind::Incremental, 0));
        std::fs::write(&path, "id,name\nanna,Anna A\nbo,Bo B\n").unwrap();
        let changed = s.pass(PassKind::Incremental, None).await.unwrap();
        assert_eq!((changed.kind, changed.entries.len()), (PassKind::Full, 2));
        std::fs::write(&path, "id,name\nanna,\n").unwrap();
        assert!(matches!(s.pass(PassKind::Full, None).await, Err(SourceError::Protocol(m)) if m.contains("name")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
