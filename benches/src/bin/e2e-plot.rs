//! `e2e-plot SERIES.csv OUT.svg TITLE`: draws messages delivered per second over
//! the run from the CSV `benches/e2e.py` writes (`second,delivered` rows).

use std::process::ExitCode;

use plotters::prelude::*;

fn read_series(path: &str) -> Result<Vec<(u32, u32)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut points = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let parsed = line
            .split_once(',')
            .and_then(|(s, c)| Some((s.trim().parse().ok()?, c.trim().parse().ok()?)));
        match parsed {
            Some(point) => points.push(point),
            None => return Err(format!("{path}:{}: expected `second,delivered`", n + 1)),
        }
    }
    Ok(points)
}

fn plot(points: &[(u32, u32)], out: &str, title: &str) -> Result<(), Box<dyn std::error::Error>> {
    let max_x = points.iter().map(|p| p.0).max().unwrap_or(1).max(1);
    let max_y = points.iter().map(|p| p.1).max().unwrap_or(1).max(1);
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
        .x_desc("seconds since start (partitioning included)")
        .y_desc("messages delivered per second")
        .draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
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
        .and_then(|points| plot(&points, out, title).map_err(|e| format!("{out}: {e}")));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e-plot: {e}");
            ExitCode::FAILURE
        }
    }
}
