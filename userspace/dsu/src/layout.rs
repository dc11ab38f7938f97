//! Page-map construction: pure logic, shared by [`attach`](crate::attach) and the tests.

use crate::global::PAGE_SIZE;

/// Where one global sits in this program and where its pages are in the segment.
///
/// ```
/// let v = dsu::layout::Placed { name: "x".into(), addr: 0x1000, pages: 1, first_page: 7 };
/// assert_eq!(v.pages, 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Variable name (for messages).
    pub name: String,
    /// Address of its first page in this program.
    pub addr: usize,
    /// Pages it occupies here.
    pub pages: u64,
    /// Index of its first page in the segment (from RESOLVE).
    pub first_page: u64,
}

/// The section to map and which segment page backs each of its pages.
///
/// ```
/// use dsu::layout::{Placed, page_map};
/// let vars = [
///     Placed { name: "b".into(), addr: 0x11000, pages: 2, first_page: 5 },
///     Placed { name: "a".into(), addr: 0x10000, pages: 1, first_page: 9 },
/// ];
/// let m = page_map(&vars).unwrap();
/// assert_eq!(m.start, 0x10000);
/// assert_eq!(m.pages, vec![9, 5, 6]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageMap {
    /// First address of the section.
    pub start: usize,
    /// `pages[i]` backs the page at `start + i * PAGE_SIZE`.
    pub pages: Vec<u64>,
}

impl PageMap {
    /// Bytes covered.
    ///
    /// ```
    /// let m = dsu::layout::PageMap { start: 0, pages: vec![0, 1] };
    /// assert_eq!(m.len(), 8192);
    /// ```
    pub fn len(&self) -> usize {
        self.pages.len() * PAGE_SIZE
    }

    /// Whether the map is empty (a program with no globals).
    ///
    /// ```
    /// assert!(dsu::layout::PageMap { start: 0, pages: vec![] }.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

/// Builds the page map of the section from the globals: sorts them by address and checks
/// that they tile one range exactly (page-aligned, no gaps, no overlaps). An error says
/// what is wrong.
///
/// ```
/// use dsu::layout::{Placed, page_map};
/// let gap = [
///     Placed { name: "a".into(), addr: 0x10000, pages: 1, first_page: 0 },
///     Placed { name: "b".into(), addr: 0x12000, pages: 1, first_page: 1 },
/// ];
/// assert!(page_map(&gap).is_err());
/// ```
pub fn page_map(vars: &[Placed]) -> Result<PageMap, String> {
    let mut sorted: Vec<&Placed> = vars.iter().collect();
    sorted.sort_by_key(|v| v.addr);
    let Some(first) = sorted.first() else {
        return Ok(PageMap {
            start: 0,
            pages: Vec::new(),
        });
    };
    let start = first.addr;
    let mut next = start;
    let mut pages = Vec::new();
    for v in sorted {
        if v.addr % PAGE_SIZE != 0 {
            return Err(format!(
                "global \"{}\" at {:#x} is not page-aligned",
                v.name, v.addr
            ));
        }
        if v.pages == 0 {
            return Err(format!("global \"{}\" occupies no page", v.name));
        }
        if v.addr < next {
            return Err(format!(
                "global \"{}\" at {:#x} overlaps the previous one (ending at {next:#x})",
                v.name, v.addr
            ));
        }
        if v.addr > next {
            return Err(format!(
                "gap of {} bytes before global \"{}\" at {:#x}: something that is not a dsu global is in the section",
                v.addr - next,
                v.name,
                v.addr
            ));
        }
        pages.extend(v.first_page..v.first_page + v.pages);
        next = v.addr + v.pages as usize * PAGE_SIZE;
    }
    Ok(PageMap { start, pages })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, addr: usize, pages: u64, first_page: u64) -> Placed {
        Placed {
            name: name.into(),
            addr,
            pages,
            first_page,
        }
    }

    #[test]
    fn tiles_in_address_order() {
        let m = page_map(&[
            p("c", 0x43000, 1, 0),
            p("a", 0x40000, 2, 10),
            p("b", 0x42000, 1, 3),
        ])
        .unwrap();
        assert_eq!(m.start, 0x40000);
        assert_eq!(m.pages, vec![10, 11, 3, 0]);
        assert_eq!(m.len(), 4 * 4096);
    }

    #[test]
    fn empty_is_empty() {
        let m = page_map(&[]).unwrap();
        assert!(m.is_empty());
    }

    #[test]
    fn rejects_gaps_overlaps_and_misalignment() {
        let e = page_map(&[p("a", 0x40000, 1, 0), p("b", 0x42000, 1, 1)]).unwrap_err();
        assert!(e.contains("gap of 4096 bytes before global \"b\""), "{e}");
        let e = page_map(&[p("a", 0x40000, 2, 0), p("b", 0x41000, 1, 2)]).unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
        let e = page_map(&[p("a", 0x40010, 1, 0)]).unwrap_err();
        assert!(e.contains("not page-aligned"), "{e}");
        let e = page_map(&[p("a", 0x40000, 0, 0)]).unwrap_err();
        assert!(e.contains("no page"), "{e}");
    }

    #[test]
    fn this_programs_globals_tile() {
        // The test binary has globals from the doc-less tests below; they must tile.
        let placed: Vec<Placed> = crate::GLOBALS
            .iter()
            .map(|d| Placed {
                name: d.name().into(),
                addr: d.addr as usize,
                pages: d.pages,
                first_page: 0,
            })
            .collect();
        assert!(placed.len() >= 2);
        page_map(&placed).unwrap();
    }

    crate::global! {
        static TEST_A: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        #[dsu(name = "explicit::NAME")]
        static TEST_B: [u8; 5000] = [0; 5000];
    }

    #[test]
    fn descriptors_name_and_size() {
        let a = crate::GLOBALS
            .iter()
            .find(|d| d.name() == "dsu::layout::tests::TEST_A")
            .expect("TEST_A");
        assert_eq!(a.size, 8);
        assert_eq!(a.pages, 1);
        assert_eq!(a.addr, (&raw const TEST_A).cast());
        let b = crate::GLOBALS
            .iter()
            .find(|d| d.name() == "explicit::NAME")
            .expect("TEST_B");
        assert_eq!(b.size, 5000);
        assert_eq!(b.pages, 2);
        assert_eq!(b.type_name(), "[u8;5000]");
        assert_eq!(TEST_B[0], 0);
    }
}
