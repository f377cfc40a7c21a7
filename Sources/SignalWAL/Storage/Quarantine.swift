import Logging

/// Moves damaged bytes aside into `<dir>/quarantine/`, so an operator can inspect them and a
/// later open does not trip over them again.
///
/// Quarantine never blocks recovery: if a copy cannot be written (a full disk, say), the failure
/// is logged and reported and recovery goes on.
struct Quarantine {
    let directory: String
    var access: FileAccess = .owner
    var path: String { directory + "/" + Format.quarantineDirectoryName }

    private func ensureDirectory() throws {
        if !FileSystem.kind(of: path).isDirectory {
            try FileSystem.createDirectories(path, mode: access.directoryMode)
        }
    }

    /// Copies `bytes` (a damaged range of segment `sequence` at `offset`) into
    /// `quarantine/segment-<seq>-offset-<off>.bin`. Returns the file's path. An existing copy
    /// from an earlier open is kept as it is.
    func preserve(_ bytes: UnsafeRawBufferPointer, sequence: UInt64, offset: Int) throws -> String {
        try ensureDirectory()
        let target = path + "/" + Format.quarantineFileName(sequence: sequence, offset: offset)
        if FileSystem.kind(of: target).exists { return target }
        let temporary = target + Format.temporarySuffix
        let file = try OpenFile.open(temporary, writable: true, create: true, mode: access.fileMode)
        do {
            try file.truncate(to: 0)
            try file.write(bytes, at: 0)
            try file.sync()
            try file.close()
        } catch {
            file.closeQuietly()
            try? FileSystem.remove(temporary)
            throw error
        }
        try FileSystem.rename(temporary, to: target)
        try FileSystem.syncDirectory(path)
        return target
    }

    /// Creates `quarantine/` if it is missing, logging (not throwing) when it cannot: recovery
    /// calls it on every open, so the directory exists before a full disk could stop its
    /// creation.
    func prepareDirectory(logger: Logger) {
        do {
            try ensureDirectory()
        } catch {
            logger.warning("could not create the quarantine directory; damaged segments will be set aside in place",
                           metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }

    /// Moves a whole segment file into quarantine (a rename: it needs no free space). When
    /// `quarantine/` cannot be created or entered (a full disk), renames the file in place to
    /// `segment-<seq>.wal.quarantined` instead, which recovery no longer reads as a segment but
    /// still counts when numbering new ones.
    func moveSegment(_ source: String, fileName: String, logger: Logger) throws -> String {
        do {
            return try moveIntoDirectory(source, fileName: fileName)
        } catch {
            let inPlace = directory + "/" + fileName + Format.quarantinedInPlaceSuffix
            logger.error("could not move a segment into quarantine/; renamed it in place", metadata: [
                "file": "\(source)", "renamed_to": "\(inPlace)", "error": "\(error)"])
            try FileSystem.rename(source, to: inPlace)
            try FileSystem.syncDirectory(directory)
            return inPlace
        }
    }

    private func moveIntoDirectory(_ source: String, fileName: String) throws -> String {
        try ensureDirectory()
        var target = path + "/" + fileName
        var attempt = 1
        while FileSystem.kind(of: target).exists {
            attempt += 1
            target = path + "/" + fileName + ".\(attempt)"
        }
        try FileSystem.rename(source, to: target)
        try FileSystem.syncDirectory(path)
        try FileSystem.syncDirectory(directory)
        return target
    }
}
