;; A reporter that probes its WASI sandbox and returns 0 if it is as ABI.md
;; says, or the number of the first check that failed:
;;   1 environ_sizes_get fails or counts variables
;;   2 args_sizes_get fails or counts arguments
;;   3 fd_prestat_get(3) finds a preopened directory
;;   4 path_open under fd 3 succeeds
;;   5 random_get fails
;;   6 clock_time_get(realtime) fails or is before 2020
;;   7 sock_accept(3) succeeds
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func $sock_accept (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "etc/passwd")
  (func (export "coordinatord_abi_v1"))
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))
  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (if (i32.or (call $environ_sizes_get (i32.const 16) (i32.const 20))
                (i32.or (i32.load (i32.const 16)) (i32.load (i32.const 20))))
      (then (return (i32.const 1))))
    (if (i32.or (call $args_sizes_get (i32.const 16) (i32.const 20))
                (i32.or (i32.load (i32.const 16)) (i32.load (i32.const 20))))
      (then (return (i32.const 2))))
    (if (i32.eqz (call $fd_prestat_get (i32.const 3) (i32.const 32)))
      (then (return (i32.const 3))))
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 10)
                   (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 48)))
      (then (return (i32.const 4))))
    (if (call $random_get (i32.const 64) (i32.const 16))
      (then (return (i32.const 5))))
    (if (i32.or (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 80))
                (i64.lt_u (i64.load (i32.const 80)) (i64.const 1577836800000000000)))
      (then (return (i32.const 6))))
    (if (i32.eqz (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 96)))
      (then (return (i32.const 7))))
    (i32.const 0))
)
