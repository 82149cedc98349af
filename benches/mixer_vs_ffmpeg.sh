#!/usr/bin/env bash
# cohost mix vs ffmpeg, side by side on the same inputs (issue 3, "Measured").
#
# Makes 4 distinct moving 640x360 30 fps 20 s clips (libx264 baseline, no B-frames, SEI
# removed, Annex-B), then for REPS rounds, interleaved in the same run:
#   - cohost mix --layout grid --size 1280x720 --fps 30 --kbps 2500 (as fast as possible)
#   - ffmpeg xstack 2x2 + libx264 ultrafast/zerolatency 2500k g60 bf0 (default threads)
#   - the same ffmpeg with -threads 1 (filter and encoder), for a one-core comparison
#   - the same ffmpeg with -preset superfast (about cohost's PSNR: an equal-quality point)
# CPU seconds (user+sys from /usr/bin/time -v) per program second, with `uptime` load.
# Then the PSNR of each output against the ideal composite (xstack of the decoded inputs:
# cohost's grid puts 4 inputs on 1280x720 as four 640x360 tiles at (0,0) (640,0) (0,360)
# (640,360), host first, crop-to-fill = identity scale for 640x360 sources, no gaps),
# and one `--realtime` cohost run (CPU cores used by a 4-up 720p30 program in real time).
#
# Usage: benches/mixer_vs_ffmpeg.sh   (env: WORK=/tmp/cohost-mixbench REPS=3 COHOST=...)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/cohost-mixbench}
REPS=${REPS:-3}
COHOST=${COHOST:-$ROOT/target/release/cohost}
DUR=20
mkdir -p "$WORK"
cd "$WORK"

[ -x "$COHOST" ] || { echo "build first: cargo build --release --bin cohost" >&2; exit 1; }

enc_in() { # name lavfi-graph
  [ -s "$1.h264" ] && return
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "$2" -t $DUR \
    -pix_fmt yuv420p -c:v libx264 -profile:v baseline -bf 0 -g 60 -b:v 1200k \
    -bsf:v filter_units=remove_types=6 -f h264 "$1.h264"
}
enc_in a "testsrc2=s=640x360:r=30"
enc_in b "smptebars=s=640x360:r=30,scroll=horizontal=0.004:vertical=0.002,noise=alls=12:allf=t"
enc_in c "mandelbrot=s=640x360:r=30"
enc_in d "life=s=640x360:r=30:mold=10:ratio=0.3:life_color=#f0c040:death_color=#203050:mold_color=#40a060,format=yuv420p"

INPUTS=(a.h264 b.h264 c.h264 d.h264)
FF_IN=()
for f in "${INPUTS[@]}"; do FF_IN+=(-framerate 30 -i "$f"); done
XSTACK='[0:v][1:v][2:v][3:v]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0,format=yuv420p'

# Ideal composite: the decoded inputs stacked, lossless (raw y4m).
if [ ! -s ideal.y4m ]; then
  ffmpeg -hide_banner -loglevel error -y "${FF_IN[@]}" -filter_complex "$XSTACK" \
    -f yuv4mpegpipe ideal.y4m
fi

cpu() { # file from /usr/bin/time -v -> user+sys seconds
  awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{printf "%.2f", u+s}' "$1"
}
wall() {
  awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$1"
}
load() { uptime | sed 's/.*load average: //'; }

run_cohost() { # out.flv timefile [extra args]
  local out=$1 tf=$2
  shift 2
  local args=()
  for f in "${INPUTS[@]}"; do args+=(--input "$f"); done
  /usr/bin/time -v -o "$tf" "$COHOST" mix "${args[@]}" --layout grid --size 1280x720 \
    --fps 30 --kbps 2500 "$@" -o "$out" >/dev/null 2>"$tf.log"
}
run_ffmpeg() { # out.flv timefile threads(0=default) [preset]
  local out=$1 tf=$2 th=$3 preset=${4:-ultrafast}
  local targs=()
  [ "$th" != 0 ] && targs=(-filter_complex_threads "$th" -threads "$th")
  /usr/bin/time -v -o "$tf" ffmpeg -hide_banner -loglevel error -y "${FF_IN[@]}" \
    -filter_complex "$XSTACK" "${targs[@]}" -c:v libx264 -preset "$preset" -tune zerolatency \
    -b:v 2500k -g 60 -bf 0 -an -f flv "$out"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; cohost $(git -C "$ROOT" rev-parse --short HEAD)"
echo "# ffmpeg: $(ffmpeg -hide_banner -version | head -1)"
printf '%-4s %-16s %8s %8s %10s %s\n' rep program cpu_s cpu/s wall load_before
for r in $(seq 1 "$REPS"); do
  l=$(load); run_cohost cohost.flv t_cohost_$r.txt
  c=$(cpu t_cohost_$r.txt)
  printf '%-4s %-16s %8s %8.3f %10s %s\n' "$r" cohost "$c" "$(echo "$c/$DUR" | bc -l)" "$(wall t_cohost_$r.txt)" "$l"
  l=$(load); run_ffmpeg ffmpeg.flv t_ffmpeg_$r.txt 0
  f=$(cpu t_ffmpeg_$r.txt)
  printf '%-4s %-16s %8s %8.3f %10s %s\n' "$r" ffmpeg "$f" "$(echo "$f/$DUR" | bc -l)" "$(wall t_ffmpeg_$r.txt)" "$l"
  l=$(load); run_ffmpeg ffmpeg1.flv t_ffmpeg1_$r.txt 1
  f1=$(cpu t_ffmpeg1_$r.txt)
  printf '%-4s %-16s %8s %8.3f %10s %s\n' "$r" ffmpeg-threads1 "$f1" "$(echo "$f1/$DUR" | bc -l)" "$(wall t_ffmpeg1_$r.txt)" "$l"
  l=$(load); run_ffmpeg ffmpeg_sf.flv t_ffmpeg_sf_$r.txt 0 superfast
  fs=$(cpu t_ffmpeg_sf_$r.txt)
  printf '%-4s %-16s %8s %8.3f %10s %s\n' "$r" ffmpeg-superfast "$fs" "$(echo "$fs/$DUR" | bc -l)" "$(wall t_ffmpeg_sf_$r.txt)" "$l"
  printf '%-4s ratio cohost/ffmpeg = %.3f   cohost/ffmpeg-threads1 = %.3f   cohost/ffmpeg-superfast = %.3f\n' "$r" \
    "$(echo "$c/$f" | bc -l)" "$(echo "$c/$f1" | bc -l)" "$(echo "$c/$fs" | bc -l)"
done

# PSNR: both sides get time base 1/30 and pts = frame index, so output frame n meets ideal
# frame n (setpts=N/30/TB alone rounds the FLV's 1 ms time base down, and the psnr filter's
# frame sync then pairs 2 frames in 3 with the previous ideal frame). The "ideal+1" line
# pairs output n with ideal n+1: it must be clearly worse, else the alignment is off.
psnr() { # out.flv shift
  ffmpeg -hide_banner -nostats -i "$1" -i ideal.y4m -lavfi \
    "[0:v]settb=1/30,setpts=N,format=yuv420p[o];[1:v]trim=start_frame=$2,settb=1/30,setpts=N[r];[o][r]psnr" \
    -f null - 2>&1 | grep -o 'PSNR y:.*' | tail -1
}
echo "# frames, video kbit/s and PSNR against ideal.y4m ($(grep -c FRAME ideal.y4m) frames)"
for o in cohost.flv ffmpeg.flv ffmpeg1.flv ffmpeg_sf.flv; do
  n=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$o")
  kb=$(ffprobe -v error -select_streams v:0 -show_entries packet=size -of csv=p=0 "$o" |
    awk -v d=$DUR '{s+=$1} END{printf "%.0f", s*8/d/1000}')
  echo "$o frames=$n video_kbps=$kb $(psnr "$o" 0)"
  echo "$o (ideal+1, misaligned on purpose) $(psnr "$o" 1)"
done

echo "# realtime: cohost mix --realtime, $DUR s program"
l=$(load); run_cohost cohost_rt.flv t_cohost_rt.txt --realtime
c=$(cpu t_cohost_rt.txt)
printf 'realtime cpu_s=%s cores=%.3f wall=%s load_before=%s\n' "$c" "$(echo "$c/$DUR" | bc -l)" "$(wall t_cohost_rt.txt)" "$l"
