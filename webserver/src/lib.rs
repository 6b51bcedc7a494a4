//! updraft-webserver
