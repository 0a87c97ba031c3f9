//! Integration tests of kiln-image: layers written from real trees and applied onto real
//! directories.

mod common;
mod hostile;
mod roundtrip;
mod whiteouts;
