import CLinux

// Linux constants that Swift's Glibc module leaves out (it is built without _GNU_SOURCE).
public let O_PATH: Int32 = SUF_O_PATH
public let O_DIRECT: Int32 = SUF_O_DIRECT
public let O_TMPFILE: Int32 = SUF_O_TMPFILE
public let UTIME_NOW: Int = SUF_UTIME_NOW
public let UTIME_OMIT: Int = SUF_UTIME_OMIT
public let SEEK_DATA: Int32 = SUF_SEEK_DATA
public let SEEK_HOLE: Int32 = SUF_SEEK_HOLE
