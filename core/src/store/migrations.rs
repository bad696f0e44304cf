//! The schema migrations of both stores, embedded in the binary as text and
//! handed to sqlx's migrator at run time.
//!
//! `sqlx::migrate!` embeds them at compile time instead, but needs sqlx's
//! `macros` feature, which builds sqlx a second time for the proc-macro
//! (SQLite's C source included). A migration here is what `migrate!` makes
//! of the same file: version and description from the name
//! (`0003_sent_marks.sql` is version 3, "sent marks"), and a checksum that is
//! the SHA-384 of the text, so a database migrated by an earlier build
//! validates unchanged. A new file in `migrations/<store>/` must be listed
//! below; a test compares the lists with the directories.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// Name and text of each migration file, in order.
pub type Files = &'static [(&'static str, &'static str)];

macro_rules! embed {
    ($store:literal: $($file:literal),* $(,)?) => {
        &[$((
            $file,
            include_str!(concat!("../../../migrations/", $store, "/", $file)),
        )),*]
    };
}

/// `migrations/postgres/`.
pub const POSTGRES: Files = embed!("postgres":
    "0001_init.sql",
    "0002_hot_path_indexes.sql",
    "0003_idempotency_fingerprint.sql",
    "0004_sent_marks.sql",
    "0005_traceparent.sql",
    "0006_leader.sql",
);

/// `migrations/sqlite/`.
pub const SQLITE: Files = embed!("sqlite":
    "0001_init.sql",
    "0002_idempotency_fingerprint.sql",
    "0003_sent_marks.sql",
    "0004_traceparent.sql",
);

/// The migrator for one store's files.
pub async fn migrator(files: Files) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Embedded(files)).await
}

#[derive(Debug)]
struct Embedded(Files);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move {
            self.0
                .iter()
                .map(|&(name, sql)| migration(name, sql))
                .collect()
        })
    }
}

fn migration(name: &'static str, sql: &'static str) -> Result<Migration, BoxDynError> {
    let stem = name
        .strip_suffix(".sql")
        .ok_or_else(|| format!("migration {name}: not a .sql file"))?;
    let (version, description) = stem
        .split_once('_')
        .ok_or_else(|| format!("migration {name}: not <version>_<description>.sql"))?;
    let version: i64 = version
        .parse()
        .map_err(|e| format!("migration {name}: version {version:?}: {e}"))?;
    Ok(Migration::new(
        version,
        Cow::Owned(description.replace('_', " ")),
        MigrationType::Simple,
        Cow::Borrowed(sql),
        sql.starts_with("-- no-transaction"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `migrations/<store>/` is embedded, in order, and
    /// nothing else.
    #[test]
    fn the_lists_match_the_directories() {
        for (store, files) in [("postgres", POSTGRES), ("sqlite", SQLITE)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../migrations")
                .join(store);
            let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            on_disk.sort();
            let embedded: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
            assert_eq!(embedded, on_disk, "{store}: list every file of {dir:?}");
        }
    }

    /// What `sqlx::migrate!` stored in `_sqlx_migrations` for each file,
    /// read from databases created by a build that used it: a database
    /// migrated then must validate now.
    /// Version, description and checksum (hex) of each row.
    type Stored = &'static [(i64, &'static str, &'static str)];

    const STORED_BY_MIGRATE: [(Files, Stored); 2] = [
        (
            POSTGRES,
            &[
                (
                    1,
                    "init",
                    "e46cac431b6f9e69c8bb3c9f77e48682c7e3588251cabc3acb266319084e4c0b7824b2f5ec91936a724d0ef553f87e86",
                ),
                (
                    2,
                    "hot path indexes",
                    "5053dbf6db8963af4fbd89814539bc1796eb9a39c38b7680f111a2dc72fdc4739525c8ffcc8c1bcdf8567e835fd0f3eb",
                ),
                (
                    3,
                    "idempotency fingerprint",
                    "f4b5813a6fe16715392bd1fc5325da55df8c9717827a9f4d3e3aa7454f33b3ceaeccdbe478a3d04b423756aead77c5d3",
                ),
                (
                    4,
                    "sent marks",
                    "496bd641cd55d215b1d3962f793422240826fe2560615d48849808dc4c3edaf37d317d41d5ee9fa1fb5cbb5759d82f80",
                ),
                (
                    5,
                    "traceparent",
                    "f636c69b7957c2a2c640b5f43c5706599fd947b56e50b33f606f1062891b98afe5fce6bb214c8b5f1778d01f8cb0e4ce",
                ),
                // Added after `migrate!` was dropped: `sha384sum` of the file.
                (
                    6,
                    "leader",
                    "de46bece3350d7a5f6119ffde44a685ca9ffc99741c0f9f372d7e8138b2477299d767d1ffd533645031b20baa0bbdcc9",
                ),
            ],
        ),
        (
            SQLITE,
            &[
                (
                    1,
                    "init",
                    "1e132ee2bce94a365cdf89e787116cf162d69b5b3c6dd5869cce6a4f1f509671710f93fdfc32235d3b16ec0c6b97486b",
                ),
                (
                    2,
                    "idempotency fingerprint",
                    "61137b093ec8f194b60e7fecabd8fa3c129b158e43e00d7f140a0ef1b6e4b9d65c26054d1cda0d1c0e5d625ffcba28be",
                ),
                (
                    3,
                    "sent marks",
                    "b856fa0b4e5cf06d957e71a551271ddd7df20a7e12d81e4295a2a9a87ba0ca682d7da298c57bd464b80b5f9d14ea4df3",
                ),
                (
                    4,
                    "traceparent",
                    "f636c69b7957c2a2c640b5f43c5706599fd947b56e50b33f606f1062891b98afe5fce6bb214c8b5f1778d01f8cb0e4ce",
                ),
            ],
        ),
    ];

    #[tokio::test]
    async fn migrations_match_what_migrate_stored() {
        for (files, stored) in STORED_BY_MIGRATE {
            let migrator = migrator(files).await.unwrap();
            let ours: Vec<(i64, String, String)> = migrator
                .migrations
                .iter()
                .map(|m| {
                    let hex = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
                    (m.version, m.description.to_string(), hex)
                })
                .collect();
            let theirs: Vec<(i64, String, String)> = stored
                .iter()
                .map(|&(v, d, c)| (v, d.to_string(), c.to_string()))
                .collect();
            assert_eq!(ours, theirs);
        }
        assert!(migration("0001.sql", "").is_err());
        assert!(migration("x_init.sql", "").is_err());
    }
}
