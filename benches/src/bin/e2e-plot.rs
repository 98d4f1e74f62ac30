//! `e2e-plot SERIES.csv OUT.svg TITLE`: draws messages delivered per second over
//! the run from the CSV `benches/e2e.py` (`second,delivered`) or `benches/relay.py`
//! (`second,volley,postfix`) writes: one line per column after the first.

use std::process::ExitCode;

use plotters::prelude::*;

/// The CSV: a header naming the columns (`second,NAME,...`), then one row per
/// second; each column after the first is one series.
type Series = (Vec<String>, Vec<(u32, Vec<u32>)>);

fn read_series(path: &str) -> Result<Series, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut lines = text.lines();
    let names: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .skip(1)
        .map(|n| n.trim().to_owned())
        .collect();
    if names.is_empty() {
        return Err(format!(
            "{path}:1: expected a header `second,NAME[,NAME...]`"
        ));
    }
    let mut points = Vec::new();
    for (n, line) in lines.enumerate() {
        let mut cells = line.split(',').map(|c| c.trim().parse::<u32>().ok());
        let second = cells.next().flatten();
        let values: Option<Vec<u32>> = cells.collect();
        match (second, values) {
            (Some(s), Some(v)) if v.len() == names.len() => points.push((s, v)),
            _ => {
                return Err(format!(
                    "{path}:{}: expected {} numbers",
                    n + 2,
                    names.len() + 1
                ))
            }
        }
    }
    Ok((names, points))
}

fn plot(series: &Series, out: &str, title: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (names, points) = series;
    let max_x = points.iter().map(|p| p.0).max().unwrap_or(1).max(1);
    let max_y = points
        .iter()
        .flat_map(|p| p.1.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let root = SVGBackend::new(out, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0u32..max_x + 1, 0u32..max_y + max_y / 10 + 1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("messages delivered per second")
        .draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA, BLACK];
    for (i, name) in names.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1[i])), color))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if names.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, csv, out, title] = args.as_slice() else {
        eprintln!("usage: e2e-plot SERIES.csv OUT.svg TITLE");
        return ExitCode::from(2);
    };
    let result = read_series(csv)
        .and_then(|series| plot(&series, out, title).map_err(|e| format!("{out}: {e}")));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e-plot: {e}");
            ExitCode::FAILURE
        }
    }
}
