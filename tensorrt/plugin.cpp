// Shared pieces of the plugins: logging, type codes, the input-slot map and field parsing.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "plugin_impl.h"

namespace mambac::trt {

std::atomic<ILoggerFinder*> g_logger_finder{nullptr};

void log_error(const std::string& msg) noexcept {
  ILoggerFinder* finder = g_logger_finder.load();
  ILogger* logger = finder ? finder->findLogger() : nullptr;
  if (logger) {
    logger->log(ILogger::Severity::kERROR, msg.c_str());
  } else {
    std::fprintf(stderr, "[mambac TensorRT plugin] %s\n", msg.c_str());
  }
}

int32_t onnx_code(DataType t) noexcept {
  switch (t) {
    case DataType::kFLOAT: return kOnnxFloat;
    case DataType::kHALF: return kOnnxFloat16;
    case DataType::kBF16: return kOnnxBFloat16;
    case DataType::kINT8: return 3;
    case DataType::kINT32: return 6;
    case DataType::kINT64: return 7;
    case DataType::kBOOL: return 9;
    case DataType::kUINT8: return 2;
    // No ONNX code the checks know: shown as "type code 1000 + TensorRT's value".
    default: return 1000 + static_cast<int32_t>(t);
  }
}

std::vector<size_t> slot_map(const char* op, size_t slots, int64_t present_mask, int32_t given) {
  const std::string name(op);
  std::vector<size_t> map;
  if (present_mask >= 0) {
    if (present_mask == 0 || present_mask >= (int64_t{1} << slots) || !(present_mask & 1)) {
      throw std::invalid_argument(name + ": field '" + kPresentInputs + "' is " + std::to_string(present_mask) +
                                  ", expected a bit mask of the " + std::to_string(slots) +
                                  " input slots with slot 0 set");
    }
    for (size_t s = 0; s < slots; ++s) {
      if (present_mask >> s & 1) map.push_back(s);
    }
    if (given >= 0 && static_cast<size_t>(given) != map.size()) {
      throw std::invalid_argument(name + ": " + std::to_string(given) + " inputs given, field '" + kPresentInputs +
                                  "' = " + std::to_string(present_mask) + " names " + std::to_string(map.size()));
    }
    return map;
  }
  if (given < 1 || static_cast<size_t>(given) > slots) {
    throw std::invalid_argument(name + ": " + std::to_string(given) + " inputs given, expected 1 to " +
                                std::to_string(slots));
  }
  for (size_t s = 0; s < static_cast<size_t>(given); ++s) map.push_back(s);
  return map;
}

bool flag_field(const char* op, const char* name, const FieldValue& v) {
  if (v.i != 0 && v.i != 1) {
    throw std::invalid_argument(std::string(op) + ": attribute '" + name + "' is " + std::to_string(v.i) +
                                ", expected 0 or 1");
  }
  return v.i == 1;
}

std::string float_text(float v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  // The shortest round-trip digits (to_chars), placed without an exponent as Rust places them.
  char buf[64];
  std::string s(buf, std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific).ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  const size_t e = s.find('e');
  const long point = std::stol(s.substr(e + 1)) + 1;  // digits before the decimal point
  std::string digits = s.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const long n = static_cast<long>(digits.size());
  if (point <= 0) return sign + "0." + std::string(static_cast<size_t>(-point), '0') + digits;
  if (point >= n) return sign + digits + std::string(static_cast<size_t>(point - n), '0');
  return sign + digits.substr(0, static_cast<size_t>(point)) + "." + digits.substr(static_cast<size_t>(point));
}

void check_epsilon(const char* op, float eps) {
  if (!(std::isfinite(eps) && eps > 0)) {
    throw std::invalid_argument(std::string(op) + ": attribute 'epsilon' is " + float_text(eps) +
                                ", expected a positive number");
  }
}

void check_dt_limit(const char* op, float dt_min, float dt_max) {
  const std::string prefix = std::string(op) + ": attribute '";
  if (std::isnan(dt_min) || (std::isinf(dt_min) && dt_min > 0)) {
    throw std::invalid_argument(prefix + "dt_min' is " + float_text(dt_min) + ", expected a number below +inf");
  }
  if (std::isnan(dt_max) || dt_max < dt_min) {
    throw std::invalid_argument(prefix + "dt_max' is " + float_text(dt_max) + ", expected at least dt_min (" +
                                float_text(dt_min) + ")");
  }
}

FieldValue parse_field(const char* op, const PluginField& f, FieldKind kind) {
  const std::string prefix = std::string(op) + ": attribute '" + f.name + "' ";
  FieldValue v;
  const bool one = f.length == 1 && f.data;
  switch (kind) {
    case FieldKind::Int: {
      // The ONNX parser passes an int attribute as one int32; int64 is accepted too.
      if (one && f.type == PluginFieldType::kINT32) {
        std::memcpy(&v.i, f.data, sizeof v.i);
      } else if (one && f.type == PluginFieldType::kINT64) {
        int64_t x;
        std::memcpy(&x, f.data, sizeof x);
        if (x < INT32_MIN || x > INT32_MAX) throw std::invalid_argument(prefix + "is " + std::to_string(x) + ", out of range");
        v.i = static_cast<int32_t>(x);
      } else {
        throw std::invalid_argument(prefix + "must be an int");
      }
      break;
    }
    case FieldKind::Float: {
      if (one && f.type == PluginFieldType::kFLOAT32) {
        std::memcpy(&v.f, f.data, sizeof v.f);
      } else if (one && f.type == PluginFieldType::kFLOAT64) {
        double x;
        std::memcpy(&x, f.data, sizeof x);
        v.f = static_cast<float>(x);
      } else {
        throw std::invalid_argument(prefix + "must be a float");
      }
      break;
    }
    case FieldKind::String: {
      if (f.type != PluginFieldType::kCHAR || f.length < 0 || (f.length > 0 && !f.data)) {
        throw std::invalid_argument(prefix + "must be a string");
      }
      // `length` chars, which may or may not end in a NUL.
      const char* c = static_cast<const char*>(f.data);
      v.s.assign(c, c ? strnlen(c, static_cast<size_t>(f.length)) : 0);
      break;
    }
  }
  return v;
}

}  // namespace mambac::trt
