//! Image bytes → one NCHW slot of the model's input tensor: decode (JPEG, PNG, WebP),
//! convert to RGB, resize the shorter side, center-crop, normalize.

use std::io::Cursor;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{ImageFormat, ImageReader, Limits, RgbImage};

use crate::model::PreprocessSpec;

/// Largest accepted image side; bigger images are rejected before their pixels are decoded.
pub const MAX_SIDE: u32 = 16_384;

/// Largest accepted ratio of long to short side; thinner images would resize to huge buffers.
const MAX_ASPECT: u32 = 32;

/// The resize algorithm named by `model.json`'s `interpolation`. The filters widen their
/// support when shrinking (antialiased), as PIL's and torchvision's resizes do.
pub fn filter_for(interpolation: &str) -> Option<ResizeAlg> {
    let filter = match interpolation.to_ascii_lowercase().as_str() {
        "bilinear" | "linear" | "triangle" => FilterType::Bilinear,
        "nearest" => return Some(ResizeAlg::Nearest),
        "bicubic" | "cubic" | "catmullrom" => FilterType::CatmullRom,
        "lanczos" | "lanczos3" => FilterType::Lanczos3,
        _ => return None,
    };
    Some(ResizeAlg::Convolution(filter))
}

/// Decodes `bytes` and writes the normalized `3 × crop × crop` planes into `out`.
///
/// `out` must hold exactly `3 * crop * crop` floats. A bad image returns the reason.
pub fn preprocess_into(bytes: &[u8], spec: &PreprocessSpec, out: &mut [f32]) -> Result<(), String> {
    let rgb = decode_rgb(bytes)?;
    let crop = spec.center_crop;
    let resized = resize_and_crop(&rgb, spec)?;
    let plane = (crop * crop) as usize;
    if out.len() != 3 * plane {
        return Err(format!(
            "runnel-vision bug: input slot holds {} floats, expected {}",
            out.len(),
            3 * plane
        ));
    }
    let scale = spec.std.map(|s| 1.0 / s);
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    for (i, px) in resized.chunks_exact(3).take(plane).enumerate() {
        r_plane[i] = (f32::from(px[0]) - spec.mean[0]) * scale[0];
        g_plane[i] = (f32::from(px[1]) - spec.mean[1]) * scale[1];
        b_plane[i] = (f32::from(px[2]) - spec.mean[2]) * scale[2];
    }
    Ok(())
}

/// Decodes JPEG, PNG or WebP (format sniffed from the bytes) into 8-bit RGB.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("empty image (0 bytes)".to_string());
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read image: {e}"))?;
    match reader.format() {
        None => {
            return Err(format!(
                "unrecognized image format ({} bytes); expected JPEG, PNG or WebP",
                bytes.len()
            ));
        }
        Some(ImageFormat::Jpeg) => check_jpeg_complete(bytes)?,
        Some(_) => {}
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("cannot decode image: {e}"))?;
    if img.width() == 0 || img.height() == 0 {
        return Err("image has no pixels".to_string());
    }
    // to_rgb8 drops alpha and expands grayscale; 16-bit and float images are scaled to 8 bits.
    Ok(img.into_rgb8())
}

/// Walks the JPEG's segments up to its end-of-image marker. The JPEG decoder fills a cut-off
/// image with gray instead of failing, and the model would then classify half a picture.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), String> {
    let truncated = || {
        Err(format!(
            "truncated JPEG ({} bytes): data ends before the end-of-image marker",
            bytes.len()
        ))
    };
    let mut i = 2; // past SOI
    loop {
        // Markers may be preceded by fill bytes (0xFF) or, in sloppy files, by garbage.
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else {
            return truncated();
        };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // Standalone markers carry no length.
            0x00 | 0x01 | 0xD0..=0xD7 => {}
            _ => {
                let Some(len) = bytes.get(i..i + 2) else {
                    return truncated();
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len < 2 || i + len > bytes.len() {
                    return truncated();
                }
                i += len;
                if marker == 0xDA {
                    // Entropy-coded data: 0xFF is followed by 0x00 (stuffing), a restart
                    // marker or more fill; anything else starts the next segment.
                    loop {
                        let Some(pos) = bytes[i..].iter().position(|b| *b == 0xFF) else {
                            return truncated();
                        };
                        i += pos;
                        match bytes.get(i + 1) {
                            None => return truncated(),
                            Some(0x00 | 0xD0..=0xD7) => i += 2,
                            Some(0xFF) => i += 1,
                            Some(_) => break,
                        }
                    }
                }
            }
        }
    }
}

/// Resizes so the shorter side is `resize_shorter_side` and takes the `center_crop` square,
/// as packed RGB bytes.
fn resize_and_crop(img: &RgbImage, spec: &PreprocessSpec) -> Result<Vec<u8>, String> {
    let (w, h) = img.dimensions();
    let (short, long) = (w.min(h), w.max(h));
    if long / short > MAX_ASPECT {
        return Err(format!(
            "image {w}×{h} is too elongated (aspect ratio above {MAX_ASPECT}:1)"
        ));
    }
    let target = spec.resize_shorter_side;
    // Round like torchvision's Resize(int): the long side keeps the aspect ratio.
    let scaled_long = ((u64::from(long) * u64::from(target) + u64::from(short) / 2)
        / u64::from(short))
    .max(u64::from(target)) as u32;
    let (nw, nh) = if w <= h {
        (target, scaled_long)
    } else {
        (scaled_long, target)
    };
    let algorithm =
        filter_for(&spec.interpolation).unwrap_or(ResizeAlg::Convolution(FilterType::Bilinear));
    let crop = spec.center_crop;
    if nw < crop || nh < crop {
        return Err(format!(
            "model.json: center_crop {crop} is larger than the resized image {nw}×{nh}"
        ));
    }
    // Only the center crop is kept, so resample just the source region it comes from
    // (in exact source coordinates): the same pixels as resizing the whole image and
    // cropping, for a fraction of the work.
    let (left, top) = ((nw - crop) / 2, (nh - crop) / 2);
    let (sx, sy) = (f64::from(w) / f64::from(nw), f64::from(h) / f64::from(nh));
    let options = ResizeOptions::new().resize_alg(algorithm).crop(
        f64::from(left) * sx,
        f64::from(top) * sy,
        f64::from(crop) * sx,
        f64::from(crop) * sy,
    );
    let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3)
        .map_err(|e| format!("cannot resize image {w}×{h}: {e}"))?;
    let mut dst = Image::new(crop, crop, PixelType::U8x3);
    RESIZER
        .with_borrow_mut(|resizer| resizer.resize(&src, &mut dst, &options))
        .map_err(|e| format!("cannot resize image {w}×{h}: {e}"))?;
    Ok(dst.into_vec())
}

/// Where a letterboxed image sits in the model's square input: original pixels times
/// `scale`, shifted by the padding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Input pixels per original pixel, across.
    pub scale_x: f64,
    /// Input pixels per original pixel, down.
    pub scale_y: f64,
    /// Left padding, in input pixels.
    pub pad_x: f64,
    /// Top padding, in input pixels.
    pub pad_y: f64,
    /// The original image's width and height.
    pub width: u32,
    /// See `width`.
    pub height: u32,
}

impl Letterbox {
    /// A point of the model input back in original pixels, clamped to the image.
    pub fn to_original(&self, x: f64, y: f64) -> (f64, f64) {
        (
            ((x - self.pad_x) / self.scale_x).clamp(0.0, f64::from(self.width)),
            ((y - self.pad_y) / self.scale_y).clamp(0.0, f64::from(self.height)),
        )
    }
}

/// Decodes `bytes`, scales the image to fit `side × side` keeping its aspect ratio,
/// centres it on a `pad`-gray square and writes the `3 × side × side` planes of
/// 0..1 RGB into `out` (YOLO's letterbox).
pub fn letterbox_into(
    bytes: &[u8],
    side: u32,
    pad: u8,
    algorithm: ResizeAlg,
    out: &mut [f32],
) -> Result<Letterbox, String> {
    let img = decode_rgb(bytes)?;
    let (w, h) = img.dimensions();
    let (short, long) = (w.min(h), w.max(h));
    if long / short > MAX_ASPECT {
        return Err(format!(
            "image {w}×{h} is too elongated (aspect ratio above {MAX_ASPECT}:1)"
        ));
    }
    let plane = (side * side) as usize;
    if out.len() != 3 * plane {
        return Err(format!(
            "runnel-vision bug: input slot holds {} floats, expected {}",
            out.len(),
            3 * plane
        ));
    }
    let scale = (f64::from(side) / f64::from(w)).min(f64::from(side) / f64::from(h));
    let nw = ((f64::from(w) * scale).round() as u32).clamp(1, side);
    let nh = ((f64::from(h) * scale).round() as u32).clamp(1, side);
    let (left, top) = ((side - nw) / 2, (side - nh) / 2);
    let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3)
        .map_err(|e| format!("cannot resize image {w}×{h}: {e}"))?;
    let mut dst = Image::new(nw, nh, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(algorithm);
    RESIZER
        .with_borrow_mut(|resizer| resizer.resize(&src, &mut dst, &options))
        .map_err(|e| format!("cannot resize image {w}×{h}: {e}"))?;
    let gray = f32::from(pad) / 255.0;
    out.fill(gray);
    let pixels = dst.buffer();
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    for y in 0..nh as usize {
        let row = &pixels[y * nw as usize * 3..(y + 1) * nw as usize * 3];
        let at = (y + top as usize) * side as usize + left as usize;
        for (x, px) in row.chunks_exact(3).enumerate() {
            r_plane[at + x] = f32::from(px[0]) / 255.0;
            g_plane[at + x] = f32::from(px[1]) / 255.0;
            b_plane[at + x] = f32::from(px[2]) / 255.0;
        }
    }
    Ok(Letterbox {
        scale_x: f64::from(nw) / f64::from(w),
        scale_y: f64::from(nh) / f64::from(h),
        pad_x: f64::from(left),
        pad_y: f64::from(top),
        width: w,
        height: h,
    })
}

thread_local! {
    /// The resizer keeps its scratch buffers between images of one worker thread.
    static RESIZER: std::cell::RefCell<Resizer> = std::cell::RefCell::new(Resizer::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PreprocessSpec {
        PreprocessSpec {
            resize_shorter_side: 8,
            center_crop: 4,
            interpolation: "bilinear".to_string(),
            mean: [127.0; 3],
            std: [128.0; 3],
        }
    }

    fn png(img: &image::DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn uniform_image_normalizes_per_channel() {
        let img = RgbImage::from_pixel(20, 10, image::Rgb([255, 127, 0]));
        let bytes = png(&image::DynamicImage::ImageRgb8(img));
        let mut out = vec![0.0; 3 * 16];
        preprocess_into(&bytes, &spec(), &mut out).unwrap();
        assert!(out[..16].iter().all(|v| (*v - 1.0).abs() < 1e-6));
        assert!(out[16..32].iter().all(|v| v.abs() < 1e-6));
        assert!(out[32..].iter().all(|v| (*v + 127.0 / 128.0).abs() < 1e-6));
    }

    #[test]
    fn gray_and_rgba_become_rgb() {
        let gray = image::GrayImage::from_pixel(9, 9, image::Luma([255]));
        let mut out = vec![0.0; 3 * 16];
        preprocess_into(&png(&gray.into()), &spec(), &mut out).unwrap();
        assert!(out.iter().all(|v| (*v - 1.0).abs() < 1e-6));
        let rgba = image::RgbaImage::from_pixel(9, 12, image::Rgba([255, 255, 255, 0]));
        preprocess_into(&png(&rgba.into()), &spec(), &mut out).unwrap();
        assert!(out.iter().all(|v| (*v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn bad_input_gives_a_reason() {
        let mut out = vec![0.0; 3 * 16];
        let empty = preprocess_into(&[], &spec(), &mut out).unwrap_err();
        assert!(empty.contains("empty"), "{empty}");
        let junk = preprocess_into(b"hello world", &spec(), &mut out).unwrap_err();
        assert!(junk.contains("format"), "{junk}");
        let img = RgbImage::from_pixel(30, 30, image::Rgb([1, 2, 3]));
        let bytes = png(&image::DynamicImage::ImageRgb8(img));
        let cut = preprocess_into(&bytes[..bytes.len() / 2], &spec(), &mut out).unwrap_err();
        assert!(cut.contains("decode"), "{cut}");
        let jpeg = {
            let img = RgbImage::from_fn(40, 40, |x, y| image::Rgb([x as u8 * 6, y as u8 * 6, 9]));
            let mut out = Cursor::new(Vec::new());
            image::DynamicImage::ImageRgb8(img)
                .write_to(&mut out, image::ImageFormat::Jpeg)
                .unwrap();
            out.into_inner()
        };
        let mut out40 = vec![0.0; 3 * 16];
        preprocess_into(&jpeg, &spec(), &mut out40).unwrap();
        for cut in [jpeg.len() - 2, jpeg.len() / 2, 20, 3] {
            let err = preprocess_into(&jpeg[..cut], &spec(), &mut out40).unwrap_err();
            assert!(err.contains("truncated"), "cut at {cut}: {err}");
        }
        let thin = RgbImage::from_pixel(1, 100, image::Rgb([1, 2, 3]));
        let thin = preprocess_into(&png(&thin.into()), &spec(), &mut out).unwrap_err();
        assert!(thin.contains("elongated"), "{thin}");
    }
}
