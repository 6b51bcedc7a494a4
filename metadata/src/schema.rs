//! The schema: migrations embedded from `migrations/postgres` and `migrations/sqlite` (same
//! version numbers in both), applying them, and the check every process makes before it starts.

use sqlx::migrate::Migrator;

use crate::db::{query, query_split};
use crate::store::Pool;
use crate::{Backend, Error, Store};

static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");

/// How the schema of a database compares with the migrations this build knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Every known migration is applied, and nothing else.
    Current { version: i64 },
    /// Some known migrations are not applied yet (all of them for a new database).
    Unmigrated {
        applied: usize,
        known: usize,
        missing: Vec<i64>,
    },
    /// A newer updraft migrated this database.
    Newer {
        database_version: i64,
        known_version: i64,
    },
    /// A migration failed part-way and is recorded as such.
    Dirty { version: i64 },
    /// An applied migration is not the one this build has under its version (edited, or from
    /// another build).
    Modified { version: i64 },
}

/// One row of sqlx's `_sqlx_migrations`.
struct Applied {
    version: i64,
    success: bool,
    checksum: Vec<u8>,
}

fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Postgres => &POSTGRES,
        Backend::Sqlite => &SQLITE,
    }
}

impl Store {
    /// Compares the database's applied migrations with this build's. Reads only: a new database
    /// stays untouched.
    pub async fn schema_status(&self) -> Result<SchemaStatus, Error> {
        let known: Vec<_> = migrator(self.backend())
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .collect();
        let known_version = known.iter().map(|m| m.version).max().unwrap_or(0);
        let applied = self.applied_migrations().await?;

        if let Some(dirty) = applied.iter().find(|a| !a.success) {
            return Ok(SchemaStatus::Dirty {
                version: dirty.version,
            });
        }
        if let Some(newest) = applied.iter().map(|a| a.version).max()
            && newest > known_version
        {
            return Ok(SchemaStatus::Newer {
                database_version: newest,
                known_version,
            });
        }
        for a in &applied {
            let same = known
                .iter()
                .any(|m| m.version == a.version && *m.checksum == *a.checksum);
            if !same {
                return Ok(SchemaStatus::Modified { version: a.version });
            }
        }
        let missing: Vec<i64> = known
            .iter()
            .map(|m| m.version)
            .filter(|version| !applied.iter().any(|a| a.version == *version))
            .collect();
        Ok(if missing.is_empty() {
            SchemaStatus::Current {
                version: known_version,
            }
        } else {
            SchemaStatus::Unmigrated {
                applied: applied.len(),
                known: known.len(),
                missing,
            }
        })
    }

    /// Applies the migrations the database lacks and returns their versions (none when it is
    /// current). Refuses a newer, dirty or modified schema with the same message as
    /// [`Store::open`]. Safe to run from several processes at once: on Postgres sqlx takes an
    /// advisory lock, on SQLite the migrations run in one write transaction.
    pub async fn migrate(&self) -> Result<Vec<i64>, Error> {
        let missing = match self.schema_status().await? {
            SchemaStatus::Current { .. } => return Ok(Vec::new()),
            SchemaStatus::Unmigrated { missing, .. } => missing,
            other => {
                let problem = other.problem(self.url()).unwrap_or_default();
                return Err(Error::Schema(problem));
            }
        };
        let migrator = migrator(self.backend());
        let result = match &self.pool {
            Pool::Postgres(pool) => migrator.run(pool).await,
            // sqlx takes no lock on SQLite, and every process migrates the SQLite file it opens:
            // a scheduler and a worker started together on a new file would both apply
            // migration 1, and one would fail. Inside one write transaction they take turns, and
            // the second finds everything applied (each migration is a savepoint in it).
            Pool::Sqlite(pool, _) => match pool.begin_with("BEGIN IMMEDIATE").await {
                Ok(mut tx) => match migrator.run(&mut *tx).await {
                    Ok(()) => tx.commit().await.map_err(Into::into),
                    Err(error) => Err(error),
                },
                Err(error) => Err(error.into()),
            },
        };
        result.map_err(|source| Error::Migrate {
            url: self.url().to_owned(),
            source,
        })?;
        for version in &missing {
            tracing::info!(version, url = self.url(), "applied migration");
        }
        Ok(missing)
    }

    /// The rows of `_sqlx_migrations`, or none when the table does not exist yet.
    async fn applied_migrations(&self) -> Result<Vec<Applied>, Error> {
        let exists = query_split(
            "look for the migrations table",
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations') AS found",
            "SELECT EXISTS (SELECT 1 FROM sqlite_master \
             WHERE type = 'table' AND name = '_sqlx_migrations') AS found",
        );
        if !self
            .fetch_one(exists, |row| row.get::<bool>("found"))
            .await?
        {
            return Ok(Vec::new());
        }
        let applied = query(
            "read the applied migrations",
            "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version",
        );
        self.fetch_all(applied, |row| {
            Ok(Applied {
                version: row.get("version")?,
                success: row.get("success")?,
                checksum: row.get("checksum")?,
            })
        })
        .await
    }
}
impl SchemaStatus {
    /// What to tell a user about a database at `url` in this state, or `None` when it is
    /// current. Each message ends with what to do.
    pub fn problem(&self, url: &str) -> Option<String> {
        match self {
            SchemaStatus::Current { .. } => None,
            SchemaStatus::Unmigrated { applied, known, .. } => Some(format!(
                "database at {url} is not migrated ({applied} of {known} migrations applied): \
                 run \"updraft db migrate\""
            )),
            SchemaStatus::Newer {
                database_version,
                known_version,
            } => Some(format!(
                "database schema version {database_version} is newer than this updraft (knows \
                 up to {known_version}): upgrade updraft"
            )),
            SchemaStatus::Dirty { version } => Some(format!(
                "database at {url} has a failed migration {version}: restore it from a backup \
                 or repair it by hand, then run \"updraft db migrate\""
            )),
            SchemaStatus::Modified { version } => Some(format!(
                "database at {url} was migrated with a different migration {version} than this \
                 updraft's: use the updraft build that migrated it"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_migration_versions() {
        let versions = |m: &Migrator| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(versions(&POSTGRES), versions(&SQLITE));
        assert_eq!(versions(&POSTGRES)[0], 1);
    }
}
