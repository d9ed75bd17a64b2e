import ClusterRoles
import XCTest

/// `--path-map FROM=TO`: a worker host that mounts the corpus elsewhere reads the coordinator's locator
/// paths under its own folder, and nothing else changes.
final class PathMapTests: XCTestCase {
    func testOnlyPathsUnderTheFolderAreMapped() throws {
        let map = try XCTUnwrap(PathMap("/srv/data/corpus/=/mnt/corpus"))
        XCTAssertEqual(map.apply("/srv/data/corpus/cat/1.jpg"), "/mnt/corpus/cat/1.jpg")
        XCTAssertEqual(map.apply("/srv/data/corpus"), "/mnt/corpus")
        XCTAssertEqual(map.apply("/srv/data/corpus2/cat/1.jpg"), "/srv/data/corpus2/cat/1.jpg", "a sibling with a common prefix")
        XCTAssertEqual(map.apply("/elsewhere/x.jpg"), "/elsewhere/x.jpg")
        XCTAssertNil(PathMap("relative=/mnt"))
        XCTAssertNil(PathMap("/only-one-side"))
    }
}
