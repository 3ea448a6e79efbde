//! Without the `jobs` feature there is no SQLite, so no chain state: every run is a full,
//! and options asking for a chain are refused. [`ChainRun`] has no values here.

use super::BackupOptions;
use super::walk::ChainWalk;
use crate::chain::ChainReport;
use crate::error::{Error, Result};
use crate::format::v2::ParentRef;
use crate::keys::SessionId;
use crate::recipient::Recipient;
use crate::storage::Location;

pub(super) enum ChainRun {}

pub(super) struct Walked {
    pub bytes_referenced: u64,
    pub bytes_read_referenced: u64,
}

impl ChainRun {
    pub fn begin(
        opts: &BackupOptions,
        _: &[&dyn Recipient],
        _: &Location,
    ) -> Result<Option<ChainRun>> {
        match opts.chain {
            Some(_) => Err(Error::InvalidOption(
                "this coffer was built without the `jobs` feature, which incremental chains need"
                    .into(),
            )),
            None => Ok(None),
        }
    }

    pub fn parent_refs(&self) -> Vec<ParentRef> {
        match *self {}
    }

    pub fn commitments(&self) -> Vec<[u8; 32]> {
        match *self {}
    }

    pub fn walk<T>(
        &mut self,
        _: bool,
        _: impl FnOnce(&mut dyn ChainWalk) -> Result<T>,
    ) -> Result<(T, Walked)> {
        match *self {}
    }

    pub fn complete(
        self,
        _: &Walked,
        _: SessionId,
        _: i64,
        _: u64,
        _: [u8; 32],
    ) -> Result<ChainReport> {
        match self {}
    }
}
