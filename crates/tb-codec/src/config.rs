//! The codec and interceptor settings as written in a connector's config.
//!
//! A connector names one codec (`codec = "json"`) and an ordered list of interceptors
//! (`interceptors = [{ kind = "gzip" }, { kind = "lines" }]`). The list is in *receive* order:
//! bytes from the wire pass through it first to last, and encoding runs it backwards. These types
//! only describe; [`crate::Decoder`] and [`crate::Encoder`] turn them into running state.
//!
//! The `///` docs on the fields are the config reference, so they say what each knob does and
//! what its default is.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// Default line delimiter of the `lines` interceptor.
pub const DEFAULT_LINE_DELIMITER: &str = "\n";
/// Default longest line the `lines` interceptor accepts: 1 MiB.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 1024 * 1024;
/// Default largest frame the `length_prefixed` interceptor accepts: 10 MiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 10 * 1024 * 1024;
/// Default most bytes one stream (or one frame) may decompress to: 100 MiB. Also the cap on
/// a whole stream buffered as one frame when no framing interceptor is configured.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 100 * 1024 * 1024;

/// The fields of an interceptor that has none: any key is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

fn deserialize_no_fields<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<(), D::Error> {
    NoFields::deserialize(deserializer).map(|NoFields {}| ())
}

fn default_delimiter() -> String {
    DEFAULT_LINE_DELIMITER.to_owned()
}

fn default_max_length() -> usize {
    DEFAULT_MAX_LINE_LENGTH
}

fn default_max_frame() -> usize {
    DEFAULT_MAX_FRAME_LENGTH
}

fn default_max_decompressed() -> usize {
    DEFAULT_MAX_DECOMPRESSED
}

/// How a frame's bytes become a value and back: `codec = "json" | "msgpack" | "csv" | "string" |
/// "bytes"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodecKind {
    /// One JSON document per frame; a top-level array yields one value per element.
    Json,
    /// One MessagePack value per frame; a top-level array yields one value per element.
    Msgpack,
    /// Comma-separated rows: the first row of a stream names the fields, every later row becomes
    /// an object of strings.
    Csv,
    /// The frame as a UTF-8 string.
    String,
    /// The frame's bytes as they are.
    Bytes,
}

impl CodecKind {
    /// Every codec name accepted in the config, in declaration order.
    pub const ALL_NAMES: &[&str] = &["json", "msgpack", "csv", "string", "bytes"];

    /// The name of this codec as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Msgpack => "msgpack",
            Self::Csv => "csv",
            Self::String => "string",
            Self::Bytes => "bytes",
        }
    }
}

impl fmt::Display for CodecKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A codec name that is none of [`CodecKind::ALL_NAMES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec {name:?}, expected one of: json, msgpack, csv, string, bytes")]
pub struct UnknownCodecError {
    /// The name that was given.
    pub name: String,
}

impl FromStr for CodecKind {
    type Err = UnknownCodecError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "json" => Ok(Self::Json),
            "msgpack" => Ok(Self::Msgpack),
            "csv" => Ok(Self::Csv),
            "string" => Ok(Self::String),
            "bytes" => Ok(Self::Bytes),
            _ => Err(UnknownCodecError {
                name: name.to_owned(),
            }),
        }
    }
}

/// One entry of `interceptors = [...]`: a transform between the wire and the codec.
///
/// Framing interceptors (`lines`, `length_prefixed`) cut a byte stream into frames; the others
/// transform bytes (decompress, base64-decode). An interceptor listed after a framing one works
/// on each frame on its own; one listed before it works on the whole byte stream. With no framing
/// interceptor at all, the whole stream (an HTTP body, a file) is one frame.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InterceptorConfig {
    /// Splits the stream at a delimiter; each line is one frame. Empty lines are skipped, and a
    /// last line without a delimiter is still a frame when the stream ends.
    Lines {
        /// The bytes that end a line. May be several bytes, such as `"\r\n"`. Default `"\n"`.
        #[serde(default = "default_delimiter")]
        delimiter: String,
        /// The longest line accepted, in bytes, delimiter excluded. A longer line is dropped up
        /// to the next delimiter and reported once as too large. Default 1048576 (1 MiB).
        #[serde(default = "default_max_length")]
        max_length: usize,
    },
    /// Each frame is a 4-byte big-endian length followed by that many bytes.
    LengthPrefixed {
        /// The largest frame accepted, in bytes, prefix excluded. A longer one is reported as too
        /// large and, since the stream cannot be resynchronised, the rest of the stream is
        /// dropped. Default 10485760 (10 MiB).
        #[serde(default = "default_max_frame")]
        max_length: usize,
    },
    /// Gzip decompression (concatenated gzip members are accepted); gzip on send.
    Gzip {
        /// The most bytes one stream (or one frame, when listed after a framing interceptor) may
        /// decompress to. Past it the rest is dropped and reported as too large, so a
        /// decompression bomb costs an error, not memory. A long-lived stream that legitimately
        /// carries more needs a higher value. Default 104857600 (100 MiB).
        #[serde(default = "default_max_decompressed")]
        max_decompressed: usize,
    },
    /// Zstandard decompression (concatenated frames are accepted); zstd on send.
    Zstd {
        /// The most bytes one stream (or one frame, when listed after a framing interceptor) may
        /// decompress to. Past it the rest is dropped and reported as too large. Default
        /// 104857600 (100 MiB).
        #[serde(default = "default_max_decompressed")]
        max_decompressed: usize,
    },
    /// Base64 with the standard alphabet: padded or unpadded on receive, padded on send.
    // serde ignores unknown keys on a unit variant of an internally tagged enum, even with
    // `deny_unknown_fields`, so the (empty) key set is checked by a field-less struct.
    #[serde(deserialize_with = "deserialize_no_fields")]
    Base64,
}

impl InterceptorConfig {
    /// Whether this interceptor cuts a byte stream into frames (`lines`, `length_prefixed`).
    pub fn is_framing(&self) -> bool {
        matches!(self, Self::Lines { .. } | Self::LengthPrefixed { .. })
    }

    /// The name of this interceptor as written in `kind = "..."`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Lines { .. } => "lines",
            Self::LengthPrefixed { .. } => "length_prefixed",
            Self::Gzip { .. } => "gzip",
            Self::Zstd { .. } => "zstd",
            Self::Base64 => "base64",
        }
    }

    /// Checks the values that deserialize fine but cannot work.
    ///
    /// # Errors
    ///
    /// An empty `lines` delimiter (it would match everywhere) or a zero size limit (it would
    /// reject every frame).
    pub fn validate(&self) -> Result<(), InterceptorConfigError> {
        match self {
            Self::Lines { delimiter, .. } if delimiter.is_empty() => {
                Err(InterceptorConfigError::EmptyDelimiter)
            }
            Self::Lines { max_length: 0, .. } | Self::LengthPrefixed { max_length: 0 } => {
                Err(InterceptorConfigError::ZeroLimit {
                    kind: self.kind_name(),
                    field: "max_length",
                })
            }
            Self::Gzip {
                max_decompressed: 0,
            }
            | Self::Zstd {
                max_decompressed: 0,
            } => Err(InterceptorConfigError::ZeroLimit {
                kind: self.kind_name(),
                field: "max_decompressed",
            }),
            _ => Ok(()),
        }
    }
}

/// An interceptor setting that deserialized but cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterceptorConfigError {
    /// `lines` with `delimiter = ""`.
    #[error("the lines delimiter must not be empty")]
    EmptyDelimiter,
    /// A size limit of zero.
    #[error("{kind} {field} must be greater than zero")]
    ZeroLimit {
        /// The interceptor kind, such as `"gzip"`.
        kind: &'static str,
        /// The field that is zero.
        field: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct ConnectorSection {
        codec: CodecKind,
        interceptors: Vec<InterceptorConfig>,
    }

    fn parse_json(text: &str) -> Result<Vec<InterceptorConfig>, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn interceptor_defaults_fill_missing_fields() {
        let parsed = parse_json(
            r#"[{"kind":"lines"},{"kind":"length_prefixed"},{"kind":"gzip"},{"kind":"zstd"},{"kind":"base64"}]"#,
        )
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                InterceptorConfig::Lines {
                    delimiter: "\n".into(),
                    max_length: DEFAULT_MAX_LINE_LENGTH
                },
                InterceptorConfig::LengthPrefixed {
                    max_length: DEFAULT_MAX_FRAME_LENGTH
                },
                InterceptorConfig::Gzip {
                    max_decompressed: DEFAULT_MAX_DECOMPRESSED
                },
                InterceptorConfig::Zstd {
                    max_decompressed: DEFAULT_MAX_DECOMPRESSED
                },
                InterceptorConfig::Base64,
            ]
        );
    }

    #[test]
    fn interceptor_fields_are_read() {
        let parsed =
            parse_json(r#"[{"kind":"lines","delimiter":"\r\n","max_length":10}]"#).unwrap();
        assert_eq!(
            parsed,
            vec![InterceptorConfig::Lines {
                delimiter: "\r\n".into(),
                max_length: 10
            }]
        );
    }

    #[test]
    fn unknown_field_inside_struct_variant_is_rejected() {
        let error = parse_json(r#"[{"kind":"lines","max_lenght":10}]"#).unwrap_err();
        assert!(error.to_string().contains("max_lenght"), "{error}");
    }

    #[test]
    fn unknown_field_on_base64_is_rejected() {
        let error = parse_json(r#"[{"kind":"base64","padding":false}]"#).unwrap_err();
        assert!(error.to_string().contains("padding"), "{error}");
    }

    #[test]
    fn toml_connector_section_parses_and_rejects_unknown_keys() {
        let section: ConnectorSection = toml::from_str(
            r#"
            codec = "json"
            interceptors = [{ kind = "gzip" }, { kind = "lines", delimiter = "\r\n", max_length = 64 }, { kind = "base64" }]
            "#,
        )
        .unwrap();
        assert_eq!(section.codec, CodecKind::Json);
        assert_eq!(
            section.interceptors,
            vec![
                InterceptorConfig::Gzip {
                    max_decompressed: DEFAULT_MAX_DECOMPRESSED
                },
                InterceptorConfig::Lines {
                    delimiter: "\r\n".into(),
                    max_length: 64
                },
                InterceptorConfig::Base64,
            ]
        );
        for bad in [
            r#"interceptors = [{ kind = "gzip", max_decompresed = 1 }]"#,
            r#"interceptors = [{ kind = "base64", url_safe = true }]"#,
        ] {
            let text = format!("codec = \"json\"\n{bad}");
            assert!(toml::from_str::<ConnectorSection>(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_interceptor_kind_is_rejected() {
        assert!(parse_json(r#"[{"kind":"brotli"}]"#).is_err());
    }

    #[test]
    fn connector_section_parses_codec_and_interceptors() {
        let section: ConnectorSection = serde_json::from_str(
            r#"{"codec":"msgpack","interceptors":[{"kind":"gzip","max_decompressed":5}]}"#,
        )
        .unwrap();
        assert_eq!(section.codec, CodecKind::Msgpack);
        assert_eq!(
            section.interceptors,
            vec![InterceptorConfig::Gzip {
                max_decompressed: 5
            }]
        );
    }

    #[test]
    fn codec_names_round_trip_through_from_str_and_serde() {
        for name in CodecKind::ALL_NAMES {
            let from_str: CodecKind = name.parse().unwrap();
            let from_serde: CodecKind = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(from_str, from_serde);
            assert_eq!(from_str.name(), *name);
        }
        assert!("yaml".parse::<CodecKind>().is_err());
    }

    #[test]
    fn is_framing_is_true_only_for_lines_and_length_prefixed() {
        let framing: Vec<bool> = parse_json(
            r#"[{"kind":"lines"},{"kind":"length_prefixed"},{"kind":"gzip"},{"kind":"zstd"},{"kind":"base64"}]"#,
        )
        .unwrap()
        .iter()
        .map(InterceptorConfig::is_framing)
        .collect();
        assert_eq!(framing, vec![true, true, false, false, false]);
    }

    #[test]
    fn validate_rejects_empty_delimiter_and_zero_limits() {
        let empty_delimiter = InterceptorConfig::Lines {
            delimiter: String::new(),
            max_length: 1,
        };
        assert_eq!(
            empty_delimiter.validate(),
            Err(InterceptorConfigError::EmptyDelimiter)
        );
        let zero_gzip = InterceptorConfig::Gzip {
            max_decompressed: 0,
        };
        assert_eq!(
            zero_gzip.validate().unwrap_err().to_string(),
            "gzip max_decompressed must be greater than zero"
        );
        assert!(InterceptorConfig::Base64.validate().is_ok());
    }
}
