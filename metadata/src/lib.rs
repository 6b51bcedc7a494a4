//! updraft-metadata
