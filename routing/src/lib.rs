//! anylb-routing: the embedded BGP speaker and BFD (issue 5).
//!
//! Not built yet: this crate only holds its place in the workspace.
