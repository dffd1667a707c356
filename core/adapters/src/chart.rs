//! Pictures of the query layer's curves, for front ends that show images (the bot's `/chart`):
//! equity above, drawdown below, one line per account, drawn by plotters into a pixel buffer and
//! encoded as PNG. No text is drawn, so no font is shipped: the caption the picture goes out with
//! names each line by its colour ([`COLOURS`]) and gives the figures.

use albra_core::report::CurvePoint;
use plotters::prelude::*;

/// The picture's size in pixels.
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 500;

/// The lines' colours in order, with the names a caption gives them.
pub const COLOURS: [(&str, RGBColor); 5] = [
    ("blue", RGBColor(31, 111, 235)),
    ("orange", RGBColor(230, 126, 34)),
    ("green", RGBColor(39, 174, 96)),
    ("purple", RGBColor(142, 68, 173)),
    ("grey", RGBColor(99, 110, 114)),
];

/// The picture could not be drawn or encoded.
#[derive(Debug, thiserror::Error)]
#[error("chart: {0}")]
pub struct ChartError(String);

fn chart_err(e: impl std::fmt::Display) -> ChartError {
    ChartError(e.to_string())
}

/// Equity (top three fifths) and drawdown (below, from 0 down to the deepest) of each curve, the
/// `i`-th in `COLOURS[i % 5]`, as PNG bytes. Curves without points are left out; none at all is
/// an error (a front end says "no equity points" instead of sending a blank picture).
pub fn equity_png(curves: &[&[CurvePoint]]) -> Result<Vec<u8>, ChartError> {
    let points = || curves.iter().flat_map(|c| c.iter());
    let (Some(t0), Some(t1)) = (points().map(|p| p.at).min(), points().map(|p| p.at).max()) else {
        return Err(ChartError("no points to draw".into()));
    };
    let t1 = t1.max(t0 + 1);
    let lo = points().map(|p| p.equity).fold(f64::MAX, f64::min);
    let hi = points().map(|p| p.equity).fold(f64::MIN, f64::max);
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-4).max(1e-9);
    let deepest = points().map(|p| p.drawdown).fold(0.0, f64::max).max(1e-4);
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let (top, bottom) = root.split_vertically(HEIGHT * 3 / 5);
        let mut eq = ChartBuilder::on(&top)
            .margin(12)
            .build_cartesian_2d(t0..t1, (lo - pad)..(hi + pad))
            .map_err(chart_err)?;
        let mut dd = ChartBuilder::on(&bottom)
            .margin(12)
            .build_cartesian_2d(t0..t1, -deepest * 1.05..0.0)
            .map_err(chart_err)?;
        // A light frame around each panel (coordinates are the panel's own).
        for area in [&top, &bottom] {
            let (w, h) = area.dim_in_pixel();
            let corner = (w as i32 - 1, h as i32 - 1);
            let frame = Rectangle::new([(0, 0), corner], BLACK.mix(0.3));
            area.draw(&frame).map_err(chart_err)?;
        }
        for (i, c) in curves.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()].1;
            let line = c.iter().map(|p| (p.at, p.equity));
            eq.draw_series(LineSeries::new(line, colour.stroke_width(2)))
                .map_err(chart_err)?;
            let fall = c.iter().map(|p| (p.at, -p.drawdown));
            dd.draw_series(AreaSeries::new(fall, 0.0, colour.mix(0.25)).border_style(colour))
                .map_err(chart_err)?;
        }
        root.present().map_err(chart_err)?;
    }
    encode_png(&rgb)
}

/// An RGB buffer of [`WIDTH`] × [`HEIGHT`] as PNG.
fn encode_png(rgb: &[u8]) -> Result<Vec<u8>, ChartError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(chart_err)?;
    w.write_image_data(rgb).map_err(chart_err)?;
    w.finish().map_err(chart_err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_curve_is_a_png_of_the_stated_size_and_no_points_is_an_error() {
        let curve: Vec<CurvePoint> = (0..50)
            .map(|i| CurvePoint {
                at: i * 900_000,
                equity: 1000.0 + (i as f64 * 0.7).sin() * 50.0,
                drawdown: 0.0,
            })
            .collect();
        let curve = albra_core::report::equity_curve(
            &curve
                .iter()
                .map(|p| albra_core::state::EquityPoint {
                    at: p.at,
                    equity: rust_decimal::Decimal::from_f64_retain(p.equity).unwrap(),
                    api_weight_1m: None,
                })
                .collect::<Vec<_>>(),
        );
        let png = equity_png(&[&curve, &curve[10..]]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), WIDTH);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), HEIGHT);
        assert!(equity_png(&[&[]]).is_err());
    }
}
