//! The graph view: a DAG laid out server-side, in layers from left to right, and drawn as SVG.
//!
//! The layout is a small Sugiyama: each task's layer is its longest path from a root; an edge
//! that skips layers gets a bend point in each layer it crosses, so it is ordered (and drawn)
//! around the tasks there rather than through them; a few barycenter sweeps order each layer to
//! cut crossings; each layer is centred vertically. Pure and deterministic: the same DAG gives
//! the same picture.

use std::collections::HashMap;
use std::fmt::Write as _;

use petgraph::Direction;
use updraft_core::dag::Dag;
use updraft_core::state::TaskState;

/// A task's box.
pub const NODE_WIDTH: f64 = 168.0;
pub const NODE_HEIGHT: f64 = 34.0;
/// Space between layers, and between boxes of one layer.
const LAYER_GAP: f64 = 64.0;
const ROW_GAP: f64 = 14.0;
const MARGIN: f64 = 12.0;
/// Longer task ids are shortened in their box (the whole id is in its tooltip).
const LABEL_CHARS: usize = 22;
/// Barycenter sweeps (down and up count as two).
const SWEEPS: usize = 8;

/// Where everything goes, in SVG user units.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub width: f64,
    pub height: f64,
    /// One box per task, in the DAG's file order.
    pub nodes: Vec<NodeBox>,
    /// One line per dependency, from the upstream box's right side to the downstream box's
    /// left side, through its bend points.
    pub edges: Vec<EdgeLine>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeBox {
    pub task_id: String,
    pub layer: usize,
    /// Top-left corner.
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EdgeLine {
    pub from: String,
    pub to: String,
    pub points: Vec<(f64, f64)>,
}

/// A slot in a layer: a task, or the bend point of an edge that crosses the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Task(usize),
    Bend { edge: usize },
}

/// Lays `dag` out.
pub fn layout(dag: &Dag) -> Layout {
    let graph = dag.graph();
    let count = graph.node_count();
    let order = dag.topological_order();

    // Layers: the longest path from a root.
    let mut layer_of = vec![0usize; count];
    for task in &order {
        let index = dag
            .tasks
            .get_index_of(task.id.as_str())
            .expect("task of the dag");
        layer_of[index] = graph
            .neighbors_directed(petgraph::graph::NodeIndex::new(index), Direction::Incoming)
            .map(|up| layer_of[up.index()] + 1)
            .max()
            .unwrap_or(0);
    }
    let layers = layer_of.iter().max().map_or(0, |top| top + 1);

    // Edges in file order of their downstream task, then of their upstream one.
    let mut edges: Vec<(usize, usize)> = graph
        .edge_indices()
        .filter_map(|e| graph.edge_endpoints(e))
        .map(|(from, to)| (from.index(), to.index()))
        .collect();
    edges.sort_by_key(|&(from, to)| (to, from));

    // Slots per layer, first in file order; a bend in every layer an edge crosses.
    let mut slots: Vec<Vec<Slot>> = vec![Vec::new(); layers];
    for (index, &layer) in layer_of.iter().enumerate() {
        slots[layer].push(Slot::Task(index));
    }
    for (edge, &(from, to)) in edges.iter().enumerate() {
        for crossed in &mut slots[layer_of[from] + 1..layer_of[to]] {
            crossed.push(Slot::Bend { edge });
        }
    }

    // The slots each slot links to in the layer before (`up`) and after (`down`) it: an edge
    // runs from its upstream task through its bends to its downstream task.
    let mut up: HashMap<Slot, Vec<Slot>> = HashMap::new();
    let mut down: HashMap<Slot, Vec<Slot>> = HashMap::new();
    for (edge, &(from, to)) in edges.iter().enumerate() {
        let bends = (layer_of[from] + 1..layer_of[to]).map(|_| Slot::Bend { edge });
        let path: Vec<Slot> = std::iter::once(Slot::Task(from))
            .chain(bends)
            .chain(std::iter::once(Slot::Task(to)))
            .collect();
        for pair in path.windows(2) {
            down.entry(pair[0]).or_default().push(pair[1]);
            up.entry(pair[1]).or_default().push(pair[0]);
        }
    }

    // Barycenter sweeps: order a layer by the mean position of its links in the layer just
    // ordered; slots without links keep their place (a stable sort on their old position).
    for sweep in 0..SWEEPS {
        let downward = sweep % 2 == 0;
        let range: Vec<usize> = if downward {
            (1..layers).collect()
        } else {
            (0..layers.saturating_sub(1)).rev().collect()
        };
        for layer in range {
            let fixed = if downward { layer - 1 } else { layer + 1 };
            let position: HashMap<Slot, usize> = slots[fixed]
                .iter()
                .enumerate()
                .map(|(i, slot)| (*slot, i))
                .collect();
            let links = if downward { &up } else { &down };
            let mut keyed: Vec<(f64, Slot)> = slots[layer]
                .iter()
                .enumerate()
                .map(|(i, &slot)| {
                    let known: Vec<f64> = links
                        .get(&slot)
                        .into_iter()
                        .flatten()
                        .filter_map(|link| position.get(link))
                        .map(|&p| p as f64)
                        .collect();
                    let key = if known.is_empty() {
                        i as f64
                    } else {
                        known.iter().sum::<f64>() / known.len() as f64
                    };
                    (key, slot)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            slots[layer] = keyed.into_iter().map(|(_, slot)| slot).collect();
        }
    }

    // Coordinates: layers left to right, each centred on the tallest.
    let row = NODE_HEIGHT + ROW_GAP;
    let tallest = slots.iter().map(Vec::len).max().unwrap_or(0);
    let height = 2.0 * MARGIN + (tallest as f64 * row - ROW_GAP).max(0.0);
    let width = 2.0 * MARGIN + (layers as f64 * (NODE_WIDTH + LAYER_GAP) - LAYER_GAP).max(0.0);
    let mut task_at = vec![(0.0, 0.0); count];
    let mut bend_at: HashMap<(usize, usize), (f64, f64)> = HashMap::new();
    for (layer, layer_slots) in slots.iter().enumerate() {
        let x = MARGIN + layer as f64 * (NODE_WIDTH + LAYER_GAP);
        let top = MARGIN + (tallest - layer_slots.len()) as f64 * row / 2.0;
        for (i, slot) in layer_slots.iter().enumerate() {
            let y = top + i as f64 * row;
            match *slot {
                Slot::Task(task) => task_at[task] = (x, y),
                Slot::Bend { edge } => {
                    bend_at.insert((edge, layer), (x, y + NODE_HEIGHT / 2.0));
                }
            }
        }
    }

    let nodes = dag
        .tasks
        .keys()
        .enumerate()
        .map(|(index, id)| NodeBox {
            task_id: id.to_string(),
            layer: layer_of[index],
            x: task_at[index].0,
            y: task_at[index].1,
        })
        .collect();
    let edges = edges
        .iter()
        .enumerate()
        .map(|(edge, &(from, to))| {
            let (fx, fy) = task_at[from];
            let (tx, ty) = task_at[to];
            let mut points = vec![(fx + NODE_WIDTH, fy + NODE_HEIGHT / 2.0)];
            for layer in layer_of[from] + 1..layer_of[to] {
                let (bx, by) = bend_at[&(edge, layer)];
                points.push((bx, by));
                points.push((bx + NODE_WIDTH, by));
            }
            points.push((tx, ty + NODE_HEIGHT / 2.0));
            EdgeLine {
                from: dag.tasks.get_index(from).expect("task").0.to_string(),
                to: dag.tasks.get_index(to).expect("task").0.to_string(),
                points,
            }
        })
        .collect();
    Layout {
        width,
        height,
        nodes,
        edges,
    }
}

/// Draws `layout` as an inline SVG element. Each box is filled with its task's state in
/// `states` (the class `fill-<state>` of `app.css`; a task with no state is `none`) and links
/// to `link(task_id)` when that gives an address. Everything is escaped.
pub fn render_svg(
    layout: &Layout,
    states: &HashMap<String, TaskState>,
    link: impl Fn(&str) -> Option<String>,
) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="task graph">"#,
        w = layout.width,
        h = layout.height,
    );
    svg.push_str(r##"<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="8" markerHeight="8" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#98a2b3"/></marker></defs>"##);
    for edge in &layout.edges {
        let _ = write!(
            svg,
            r##"<path class="edge" data-from="{}" data-to="{}" d="{}" fill="none" stroke="#98a2b3" stroke-width="1.5" marker-end="url(#arrow)"/>"##,
            escape(&edge.from),
            escape(&edge.to),
            path_data(&edge.points),
        );
    }
    for node in &layout.nodes {
        let state = states
            .get(&node.task_id)
            .map_or("none", |state| state.as_str());
        let label = shorten(&node.task_id);
        let href = link(&node.task_id);
        if let Some(href) = &href {
            let _ = write!(svg, r#"<a href="{}">"#, escape(href));
        }
        let _ = write!(
            svg,
            r##"<g class="node" data-task="{id}" data-state="{state}"><title>{id} ({state})</title><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" class="fill-{state}" stroke="#475467" stroke-width="1"/><text x="{tx}" y="{ty}" dominant-baseline="middle" font-size="12">{label}</text></g>"##,
            id = escape(&node.task_id),
            state = state,
            x = node.x,
            y = node.y,
            w = NODE_WIDTH,
            h = NODE_HEIGHT,
            tx = node.x + 10.0,
            ty = node.y + NODE_HEIGHT / 2.0,
            label = escape(&label),
        );
        if href.is_some() {
            svg.push_str("</a>");
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A smooth line through `points`: straight through bends, a horizontal S-curve between them.
fn path_data(points: &[(f64, f64)]) -> String {
    let mut data = String::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        if i == 0 {
            let _ = write!(data, "M{x},{y}");
            continue;
        }
        let (px, py) = points[i - 1];
        if py == y {
            let _ = write!(data, " L{x},{y}");
        } else {
            let mid = (px + x) / 2.0;
            let _ = write!(data, " C{mid},{py} {mid},{y} {x},{y}");
        }
    }
    data
}

fn shorten(id: &str) -> String {
    if id.chars().count() <= LABEL_CHARS {
        id.to_owned()
    } else {
        let head: String = id.chars().take(LABEL_CHARS - 1).collect();
        format!("{head}…")
    }
}

/// Escapes text for an SVG/HTML text node or a quoted attribute.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(tasks: &str) -> Dag {
        let text = format!("version: 1\nstart_date: 2024-01-01\ntasks:\n{tasks}");
        let options = updraft_core::dag::LoadOptions::default();
        updraft_core::dag::decode("graph.yaml", &text, &options).expect("a valid dag")
    }

    fn node<'a>(layout: &'a Layout, id: &str) -> &'a NodeBox {
        layout.nodes.iter().find(|n| n.task_id == id).unwrap()
    }

    /// How many pairs of edges between the same two layers cross.
    fn crossings(layout: &Layout) -> usize {
        let segments: Vec<((f64, f64), (f64, f64))> = layout
            .edges
            .iter()
            .flat_map(|e| e.points.windows(2).map(|w| (w[0], w[1])))
            .filter(|(a, b)| a.0 != b.0)
            .collect();
        let mut count = 0;
        for (i, a) in segments.iter().enumerate() {
            for b in &segments[i + 1..] {
                if a.0.0 == b.0.0 && a.1.0 == b.1.0 {
                    let above_before = a.0.1 < b.0.1;
                    let above_after = a.1.1 < b.1.1;
                    if above_before != above_after && a.0.1 != b.0.1 && a.1.1 != b.1.1 {
                        count += 1;
                    }
                }
            }
        }
        count
    }

    #[test]
    fn layers_are_the_longest_path_from_a_root_left_to_right() {
        let layout = layout(&dag(
            "  a: {run: 'true'}\n  b: {run: 'true', depends_on: [a]}\n  c: {run: 'true', depends_on: [b]}\n  d: {run: 'true', depends_on: [a, c]}\n",
        ));
        let layers: Vec<usize> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| node(&layout, id).layer)
            .collect();
        assert_eq!(layers, [0, 1, 2, 3]);
        assert!(node(&layout, "a").x < node(&layout, "b").x);
        assert!(node(&layout, "c").x < node(&layout, "d").x);
        // a -> d crosses layers 1 and 2: it bends there instead of running through b and c.
        let long = layout
            .edges
            .iter()
            .find(|e| e.from == "a" && e.to == "d")
            .unwrap();
        assert_eq!(long.points.len(), 2 + 2 * 2);
        for &(_, y) in &long.points[1..long.points.len() - 1] {
            assert_ne!(y, node(&layout, "b").y + NODE_HEIGHT / 2.0);
        }
    }

    #[test]
    fn boxes_never_overlap_and_fit_in_the_picture() {
        let mut tasks = String::from("  root: {run: 'true'}\n");
        for i in 0..12 {
            tasks.push_str(&format!("  t{i}: {{run: 'true', depends_on: [root]}}\n"));
        }
        tasks.push_str("  join: {run: 'true', depends_on: [t0, t5, t11]}\n");
        let layout = layout(&dag(&tasks));
        for (i, a) in layout.nodes.iter().enumerate() {
            assert!(a.x >= 0.0 && a.x + NODE_WIDTH <= layout.width, "{a:?}");
            assert!(a.y >= 0.0 && a.y + NODE_HEIGHT <= layout.height, "{a:?}");
            for b in &layout.nodes[i + 1..] {
                let apart = a.x + NODE_WIDTH <= b.x
                    || b.x + NODE_WIDTH <= a.x
                    || a.y + NODE_HEIGHT <= b.y
                    || b.y + NODE_HEIGHT <= a.y;
                assert!(apart, "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn sweeps_untangle_two_crossed_pairs() {
        // In file order, x1 feeds y2 and x2 feeds y1: two crossing edges; ordered, none.
        let layout = layout(&dag(
            "  x1: {run: 'true'}\n  x2: {run: 'true'}\n  y1: {run: 'true', depends_on: [x2]}\n  y2: {run: 'true', depends_on: [x1]}\n",
        ));
        assert_eq!(crossings(&layout), 0, "{layout:#?}");
    }

    #[test]
    fn the_same_dag_gives_the_same_picture() {
        let text = "  a: {run: 'true'}\n  b: {run: 'true', depends_on: [a]}\n  c: {run: 'true', depends_on: [a]}\n  d: {run: 'true', depends_on: [b, c]}\n";
        assert_eq!(layout(&dag(text)), layout(&dag(text)));
    }

    #[test]
    fn an_empty_picture_for_a_dag_without_edges_is_one_column() {
        let layout = layout(&dag("  a: {run: 'true'}\n  b: {run: 'true'}\n"));
        assert!(layout.edges.is_empty());
        assert_eq!(node(&layout, "a").x, node(&layout, "b").x);
    }

    #[test]
    fn svg_colours_boxes_by_state_links_them_and_escapes() {
        let layout = layout(&dag(
            "  extract: {run: 'true'}\n  a_task_with_a_rather_long_name: {run: 'true', depends_on: [extract]}\n",
        ));
        let states = HashMap::from([("extract".to_owned(), TaskState::Success)]);
        let svg = render_svg(&layout, &states, |id| {
            Some(format!("/try?task={id}&x=\"<script>"))
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(r#"data-task="extract" data-state="success""#));
        assert!(svg.contains(r#"class="fill-success""#));
        assert!(svg.contains(r#"data-state="none""#));
        assert!(svg.contains("a_task_with_a_rather_…"));
        assert!(svg.contains("<title>a_task_with_a_rather_long_name (none)</title>"));
        assert!(svg.contains("&amp;x=&quot;&lt;script&gt;"));
        assert!(!svg.contains("<script>"));
        assert_eq!(svg.matches("<path class=\"edge\"").count(), 1);
    }
}
