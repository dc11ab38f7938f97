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

/// A run of consecutive segment pages: `page_count` pages from `first_page`. Laid out like
/// `struct dsu_extent`, so a slice of them is passed to BIND as is.
///
/// ```
/// let e = dsu::layout::Extent { first_page: 4, page_count: 2 };
/// assert_eq!(e.pages().collect::<Vec<_>>(), vec![4, 5]);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    /// First segment page.
    pub first_page: u64,
    /// Pages, >= 1.
    pub page_count: u64,
}

const _: () = assert!(
    std::mem::size_of::<Extent>() == std::mem::size_of::<dsu_uapi::dsu_extent>()
        && std::mem::align_of::<Extent>() == std::mem::align_of::<dsu_uapi::dsu_extent>()
);

impl Extent {
    /// Its segment pages, in order.
    pub fn pages(&self) -> std::ops::Range<u64> {
        self.first_page..self.first_page + self.page_count
    }
}

/// The section to map and which segment pages back it: the concatenation of `extents`
/// (one per global, merged where a global's pages continue the previous one's).
///
/// ```
/// use dsu::layout::{Extent, Placed, page_map};
/// let vars = [
///     Placed { name: "b".into(), addr: 0x11000, pages: 2, first_page: 5 },
///     Placed { name: "a".into(), addr: 0x10000, pages: 1, first_page: 9 },
/// ];
/// let m = page_map(&vars).unwrap();
/// assert_eq!(m.start, 0x10000);
/// assert_eq!(m.extents, vec![Extent { first_page: 9, page_count: 1 }, Extent { first_page: 5, page_count: 2 }]);
/// assert_eq!(m.pages(), vec![9, 5, 6]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageMap {
    /// First address of the section.
    pub start: usize,
    /// The segment pages backing `start` onwards, in order.
    pub extents: Vec<Extent>,
    /// Pages covered (the sum of the extents' page counts).
    pub page_count: u64,
}

impl PageMap {
    /// An empty map at `start`.
    pub fn new(start: usize) -> Self {
        Self {
            start,
            extents: Vec::new(),
            page_count: 0,
        }
    }

    /// Appends `page_count` pages from segment page `first_page`, extending the last
    /// extent when they continue it.
    ///
    /// ```
    /// let mut m = dsu::layout::PageMap::new(0);
    /// m.push(3, 2);
    /// m.push(5, 1);
    /// m.push(0, 1);
    /// assert_eq!(m.extents.len(), 2);
    /// assert_eq!(m.pages(), vec![3, 4, 5, 0]);
    /// ```
    pub fn push(&mut self, first_page: u64, page_count: u64) {
        if page_count == 0 {
            return;
        }
        self.page_count += page_count;
        if let Some(last) = self.extents.last_mut()
            && last.first_page.checked_add(last.page_count) == Some(first_page)
        {
            last.page_count += page_count;
            return;
        }
        self.extents.push(Extent {
            first_page,
            page_count,
        });
    }

    /// The per-page form: element `i` is the segment page backing `start + i * PAGE_SIZE`.
    pub fn pages(&self) -> Vec<u64> {
        self.extents.iter().flat_map(Extent::pages).collect()
    }

    /// Bytes covered.
    ///
    /// ```
    /// let mut m = dsu::layout::PageMap::new(0);
    /// m.push(0, 2);
    /// assert_eq!(m.len(), 8192);
    /// ```
    pub fn len(&self) -> usize {
        self.page_count as usize * PAGE_SIZE
    }

    /// Whether the map is empty (a program with no globals).
    ///
    /// ```
    /// assert!(dsu::layout::PageMap::new(0).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.page_count == 0
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
        return Ok(PageMap::new(0));
    };
    let start = first.addr;
    let mut next = start;
    let mut map = PageMap::new(start);
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
        map.push(v.first_page, v.pages);
        next = v.addr + v.pages as usize * PAGE_SIZE;
    }
    Ok(map)
}

/// The page maps of a program: one for the globals of the `dsu_globals` section, which
/// must tile it ([`page_map`]), then one per run of consecutive zeroed globals (in the
/// `.bss.dsu_globals_zero` input sections, which the linker places inside `.bss`, so other
/// `.bss` data may lie between runs; each global is alone in its whole pages). Empty maps
/// are left out.
///
/// ```
/// use dsu::layout::{Placed, page_maps};
/// let tiled = [Placed { name: "a".into(), addr: 0x10000, pages: 1, first_page: 0 }];
/// let zeroed = [
///     Placed { name: "z2".into(), addr: 0x90000, pages: 2, first_page: 3 },
///     Placed { name: "z1".into(), addr: 0x80000, pages: 2, first_page: 1 },
/// ];
/// let maps = page_maps(&tiled, &zeroed).unwrap();
/// assert_eq!(maps.iter().map(|m| m.start).collect::<Vec<_>>(), vec![0x10000, 0x80000, 0x90000]);
/// ```
pub fn page_maps(tiled: &[Placed], zeroed: &[Placed]) -> Result<Vec<PageMap>, String> {
    let mut maps = vec![page_map(tiled)?];
    let mut sorted: Vec<&Placed> = zeroed.iter().collect();
    sorted.sort_by_key(|v| v.addr);
    let mut run: Vec<Placed> = Vec::new();
    for v in sorted {
        if let Some(last) = run.last() {
            let end = last.addr + last.pages as usize * PAGE_SIZE;
            if v.addr < end {
                return Err(format!(
                    "zeroed global \"{}\" at {:#x} overlaps \"{}\" (ending at {end:#x})",
                    v.name, v.addr, last.name
                ));
            }
            if v.addr > end {
                maps.push(page_map(&run)?);
                run.clear();
            }
        }
        run.push(v.clone());
    }
    maps.push(page_map(&run)?);
    maps.retain(|m| !m.is_empty());
    Ok(maps)
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
        assert_eq!(m.pages(), vec![10, 11, 3, 0]);
        assert_eq!(m.len(), 4 * 4096);
        assert_eq!(m.page_count, 4);
        assert_eq!(
            m.extents,
            vec![
                Extent {
                    first_page: 10,
                    page_count: 2
                },
                Extent {
                    first_page: 3,
                    page_count: 1
                },
                Extent {
                    first_page: 0,
                    page_count: 1
                },
            ]
        );
    }

    #[test]
    fn one_extent_per_global_merged_when_contiguous() {
        // b's pages continue a's in the segment: one extent; c does not continue b.
        let m = page_map(&[
            p("a", 0x40000, 3, 7),
            p("b", 0x43000, 2, 10),
            p("c", 0x45000, 1, 11),
            p("d", 0x46000, 5, 100),
        ])
        .unwrap();
        assert_eq!(
            m.extents,
            vec![
                Extent {
                    first_page: 7,
                    page_count: 5
                },
                Extent {
                    first_page: 11,
                    page_count: 1
                },
                Extent {
                    first_page: 100,
                    page_count: 5
                },
            ]
        );
        assert_eq!(m.page_count, 11);
        assert_eq!(
            m.pages(),
            vec![7, 8, 9, 10, 11, 11, 100, 101, 102, 103, 104]
        );
        let sum: u64 = m.extents.iter().map(|e| e.page_count).sum();
        assert_eq!(sum, m.page_count);
    }

    #[test]
    fn a_large_global_is_one_extent() {
        // 256 MiB in one global: one extent, not 65536 page indexes.
        let m = page_map(&[p("big", 0x40000000, 65536, 3)]).unwrap();
        assert_eq!(m.extents.len(), 1);
        assert_eq!(m.len(), 256 << 20);
    }

    #[test]
    fn zeroed_globals_map_in_runs_after_the_section() {
        let tiled = [p("a", 0x40000, 1, 5), p("b", 0x41000, 1, 9)];
        let zeroed = [
            p("z3", 0x200000, 4, 0),
            p("z1", 0x100000, 2, 1),
            p("z2", 0x102000, 1, 3),
        ];
        let maps = page_maps(&tiled, &zeroed).unwrap();
        assert_eq!(maps.len(), 3);
        assert_eq!((maps[0].start, maps[0].pages()), (0x40000, vec![5, 9]));
        assert_eq!((maps[1].start, maps[1].pages()), (0x100000, vec![1, 2, 3]));
        assert_eq!(
            (maps[2].start, maps[2].pages()),
            (0x200000, vec![0, 1, 2, 3])
        );
        // Only zeroed globals, or none.
        assert_eq!(page_maps(&[], &zeroed).unwrap().len(), 2);
        assert!(page_maps(&[], &[]).unwrap().is_empty());
        // The tiled section still may not have gaps; zeroed globals may not overlap.
        let gap = [p("a", 0x40000, 1, 0), p("b", 0x42000, 1, 1)];
        assert!(page_maps(&gap, &[]).is_err());
        let overlap = [p("z1", 0x100000, 2, 0), p("z2", 0x101000, 1, 2)];
        let e = page_maps(&[], &overlap).unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
        let unaligned = [p("z", 0x100800, 1, 0)];
        assert!(page_maps(&[], &unaligned).is_err());
    }

    #[test]
    fn empty_is_empty() {
        let m = page_map(&[]).unwrap();
        assert!(m.is_empty());
        assert!(m.extents.is_empty());
        assert!(m.pages().is_empty());
    }

    #[test]
    fn push_skips_empty_runs() {
        let mut m = PageMap::new(0);
        m.push(5, 0);
        assert!(m.is_empty());
        m.push(5, 1);
        m.push(9, 0);
        m.push(6, 1);
        assert_eq!(
            m.extents,
            vec![Extent {
                first_page: 5,
                page_count: 2
            }]
        );
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
        static TEST_B: [std::sync::atomic::AtomicU8; 5000] =
            [const { std::sync::atomic::AtomicU8::new(0) }; 5000];
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
        assert_eq!(b.type_name(), "[std::sync::atomic::AtomicU8;5000]");
        assert_eq!(TEST_B[0].load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
